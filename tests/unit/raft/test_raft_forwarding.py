"""Proposals a follower takes travel to the leader; ones that reach a deposed leader go on.

The peer transport checks that every message names the node at the other end of its
connection as the sender, and drops the whole connection (with everything queued behind
the message) when one does not. A node that led when a follower forwarded it a proposal,
and follows someone else by the time the ``PROP`` arrives, passes it on: it used to pass
it on under the original sender's id, so the new leader's transport dropped the deposed
leader's connection, and with it the append responses and votes queued on it, each time a
leader changed under load. The seeded schedules below send most proposals to followers
and move leadership often, so such hand-offs happen in many of them.
"""

from __future__ import annotations

import dataclasses

import pytest
from flotilla.daemons.raft import core
from flotilla.daemons.raft.messages import NONE, Entry, Message, MessageType, Role

from .harness import Cluster
from .simnet import SENDER_IDENTITY, Sim, SimFailure, scenario_for

MT = MessageType
SEEDS = range(200)
#: of the 200 schedules, 33 pass a proposal on (measured); the floor leaves room for
#: changes to the core that shift the schedules
MIN_PASSED_ON = 15


def forwarding_sim(seed: int) -> Sim:
    """A schedule where 70% of proposals go to a random member and leadership moves."""
    sc = dataclasses.replace(scenario_for(seed), p_follower=0.7, p_transfer=0.3,
                             max_delay=3, p_late=0.1)
    return Sim(seed, scenario=sc)


def run_all() -> tuple[int, list[SimFailure]]:
    passed_on, failures = 0, []
    for seed in SEEDS:
        sim = forwarding_sim(seed)
        try:
            sim.run()
        except SimFailure as exc:
            failures.append(exc)
            continue
        passed_on += sim.exercised["proposal passed on"] > 0
    return passed_on, failures


def test_schedules_with_forwarded_proposals_stay_safe_and_live() -> None:
    passed_on, failures = run_all()
    assert not failures, [str(f) for f in failures[:5]]
    assert passed_on >= MIN_PASSED_ON, f"only {passed_on} schedules passed a proposal on"


def test_simulator_catches_a_proposal_passed_on_under_another_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    original = core.RaftNode._step_follower

    def as_before(self: core.RaftNode, m: Message) -> None:
        if m.type is MT.PROP and self.lead not in (NONE, m.from_):
            self._send(Message(MT.PROP, to=self.lead, from_=m.from_, entries=m.entries))
            return
        original(self, m)

    monkeypatch.setattr(core.RaftNode, "_step_follower", as_before)
    _, failures = run_all()
    assert failures, "no schedule noticed"
    assert {f.prop for f in failures} == {SENDER_IDENTITY}, [str(f) for f in failures[:3]]
    assert "replay with RAFT_SIM_SEED=" in str(failures[0])


def deposed_leader() -> Cluster:
    """Three nodes where 1 led and now follows 2."""
    c = Cluster(3)
    c.elect(1).transfer_leadership(2)
    c.deliver()
    assert c.nodes[1].role is Role.FOLLOWER and c.nodes[1].lead == 2
    return c


def sent_after(c: Cluster, node_id: int, step: Message) -> list[Message]:
    """What ``node_id`` sends in answer to ``step``."""
    before = len(c.sent)
    c.nodes[node_id].step(step)
    c.process(node_id)
    return c.sent[before:]


def test_a_deposed_leader_passes_a_proposal_on_as_itself() -> None:
    c = deposed_leader()
    sent = sent_after(c, 1, Message(MT.PROP, to=1, from_=3, entries=(Entry(0, 1, data=b"late"),)))
    assert [(m.type, m.from_, m.to, [e.data for e in m.entries]) for m in sent] == [
        (MT.PROP, 1, 2, [b"late"])]
    c.deliver()
    assert all(b"late" in c.data_applied(i) for i in (1, 2, 3))


def test_a_deposed_leader_does_not_answer_for_another_nodes_read() -> None:
    c = deposed_leader()
    assert sent_after(c, 1, Message(MT.READ_INDEX, to=1, from_=3, context=b"r1")) == []
