"""The engine's placement decisions: every option, combination, and invariants."""

from __future__ import annotations

from collections import Counter

from flotilla.daemons.fleet.model import Requirements, requirements
from flotilla.daemons.fleet.model import UnitOption as Opt
from flotilla.daemons.fleet.scheduler import (
    Assignment,
    ClusterView,
    Job,
    Machine,
    Schedule,
    Unschedule,
    apply_changes,
    conflicts,
    decide,
    machine_assignments,
    place_globals,
    resolve_machine_id,
)
from hypothesis import given, settings
from hypothesis import strategies as st


def machines(*ids: str, **metadata: dict[str, str]) -> dict[str, Machine]:
    return {m: Machine(m, metadata.get(m, {})) for m in ids}


def job(name: str, state: str = "launched", **xfleet: str) -> Job:
    opts = [Opt("X-Fleet", key, value) for key, value in xfleet.items()]
    return Job(name, state, requirements(name, opts), unit_hash="h-" + name)


def jobs(*items: Job) -> dict[str, Job]:
    return {j.name: j for j in items}


def final(ms: dict[str, Machine], js: dict[str, Job], sched: dict[str, str] | None = None
          ) -> dict[str, str]:
    sched = sched or {}
    return apply_changes(sched, decide(ms, js, sched))


def test_least_loaded_with_ties_by_machine_id() -> None:
    ms = machines("m3", "m1", "m2")
    changes = decide(ms, jobs(job("a.service"), job("b.service"), job("c.service"),
                              job("d.service")), {"x.service": "m1"} | {})
    # x.service is unknown: unscheduled first; then a..d spread by load then id.
    assert changes[0] == Unschedule("x.service", "m1", "unit no longer exists")
    assert changes[1:] == [Schedule("a.service", "m1"), Schedule("b.service", "m2"),
                           Schedule("c.service", "m3"), Schedule("d.service", "m1")]


def test_existing_load_counts() -> None:
    ms = machines("m1", "m2")
    js = jobs(job("a.service"), job("b.service"), job("c.service"))
    sched = final(ms, js, {"a.service": "m1", "b.service": "m1"})
    assert sched["c.service"] == "m2"


def test_inactive_units_are_not_placed_and_get_unscheduled() -> None:
    ms = machines("m1")
    assert decide(ms, jobs(job("a.service", "inactive")), {}) == []
    changes = decide(ms, jobs(job("a.service", "inactive")), {"a.service": "m1"})
    assert changes == [Unschedule("a.service", "m1", "target state inactive")]


def test_loaded_units_are_placed_like_launched() -> None:
    assert final(machines("m1"), jobs(job("a.service", "loaded"))) == {"a.service": "m1"}


def test_no_machines_means_nothing_scheduled() -> None:
    assert decide({}, jobs(job("a.service")), {}) == []


def test_machine_gone_moves_units() -> None:
    ms = machines("m2")
    changes = decide(ms, jobs(job("a.service")), {"a.service": "m1"})
    assert changes == [Unschedule("a.service", "m1", "target Machine(m1) went away"),
                       Schedule("a.service", "m2")]


def test_machine_id_full_and_unique_prefix() -> None:
    ms = machines("abcdef0123", "abcdff9999", "zzz")
    assert final(ms, jobs(job("a.service", MachineID="zzz"))) == {"a.service": "zzz"}
    assert final(ms, jobs(job("a.service", MachineID="abcdef01"))) == {"a.service": "abcdef0123"}
    # An ambiguous prefix names no machine: the unit waits.
    assert final(ms, jobs(job("a.service", MachineID="abcd"))) == {}
    assert final(ms, jobs(job("a.service", MachineID="nope"))) == {}


def test_machine_id_pinned_unit_waits_when_machine_leaves() -> None:
    changes = decide(machines("m2"), jobs(job("a.service", MachineID="m1")), {"a.service": "m1"})
    assert changes == [Unschedule("a.service", "m1", "target Machine(m1) went away")]


def test_resolve_machine_id() -> None:
    assert resolve_machine_id("ab", ["abc", "xyz"]) == "abc"
    assert resolve_machine_id("a", ["abc", "abd"]) is None
    assert resolve_machine_id("abc", ["abc", "abcd"]) == "abc"


def test_metadata_or_within_key_and_across_keys() -> None:
    ms = {
        "m1": Machine("m1", {"region": "east", "disk": "ssd"}),
        "m2": Machine("m2", {"region": "west", "disk": "ssd"}),
        "m3": Machine("m3", {"region": "west", "disk": "hdd"}),
        "m4": Machine("m4", {"region": "north", "disk": "ssd"}),
    }
    j = job("a.service", MachineMetadata='"region=east" "region=west" "disk=ssd"')
    eligible = set()
    for blocked in ([], ["m1"], ["m1", "m2"]):
        ms_left = {k: v for k, v in ms.items() if k not in blocked}
        eligible.add(final(ms_left, jobs(j)).get("a.service"))
    assert eligible == {"m1", "m2", None}  # never m3 (hdd) or m4 (north)


def test_metadata_change_unschedules() -> None:
    ms = {"m1": Machine("m1", {"role": "db"}), "m2": Machine("m2", {"role": "web"})}
    changes = decide(ms, jobs(job("a.service", MachineMetadata="role=web")), {"a.service": "m1"})
    assert changes == [Unschedule("a.service", "m1", "Machine(m1) metadata does not match"),
                       Schedule("a.service", "m2")]


def test_conflicts_spread_and_leave_extra_unscheduled() -> None:
    ms = machines("m1", "m2", "m3")
    js = jobs(*[job(f"conflict.{i}.service", Conflicts="conflict.*") for i in range(5)])
    sched = final(ms, js)
    assert len(sched) == 3
    assert sorted(sched.values()) == ["m1", "m2", "m3"]


def test_one_way_conflict_blocks_both_directions() -> None:
    ms = machines("m1")
    js = jobs(job("hello.service"), job("aaa.service", Conflicts="hello.service"))
    sched = final(ms, js)
    assert sched == {"aaa.service": "m1"}  # aaa placed first by name; hello waits
    js2 = jobs(job("hello.service"), job("zzz.service", Conflicts="hello.service"))
    assert final(ms, js2) == {"hello.service": "m1"}
    # destroying the conflicting unit frees the machine
    assert final(ms, jobs(job("hello.service")), sched) == {"hello.service": "m1"}


def test_multiple_conflicts_values() -> None:
    ms = machines("m1", "m2")
    js = jobs(job("a.service"), job("b.service"),
              job("c.service", Conflicts="a.service b.service"))
    sched = final(ms, js, {"a.service": "m1", "b.service": "m2"})
    assert "c.service" not in sched


def test_unit_never_conflicts_with_itself() -> None:
    assert final(machines("m1"), jobs(job("a.service", Conflicts="a*"))) == {"a.service": "m1"}


def test_machine_of_colocates_whatever_the_name_order() -> None:
    ms = machines("m1", "m2", "m3")
    js = jobs(job("a-pong.service", MachineOf="z-ping.service"), job("z-ping.service"),
              job("filler.service"))
    sched = final(ms, js, {"filler.service": "m1"})
    assert sched["a-pong.service"] == sched["z-ping.service"] != "m1"


def test_machine_of_follows_peer_when_its_machine_dies() -> None:
    js = jobs(job("ping.service"), job("pong.service", MachineOf="ping.service"))
    sched = final(machines("m2", "m3"), js, {"ping.service": "m1", "pong.service": "m1"})
    assert sched["ping.service"] == sched["pong.service"] in {"m2", "m3"}


def test_machine_of_unschedulable_without_peer() -> None:
    js = jobs(job("pong.service", MachineOf="ping.service"))
    assert final(machines("m1"), js) == {}
    js2 = jobs(job("ping.service", "inactive"), job("pong.service", MachineOf="ping.service"))
    changes = decide(machines("m1"), js2, {"ping.service": "m1", "pong.service": "m1"})
    assert apply_changes({"ping.service": "m1", "pong.service": "m1"}, changes) == {}


def test_multiple_machine_of_needs_all_peers_local() -> None:
    js = jobs(job("a.service", MachineID="m1"), job("b.service", MachineID="m2"),
              job("c.service", MachineOf='"a.service" "b.service"'))
    sched = final(machines("m1", "m2"), js)
    assert "c.service" not in sched


def test_replaces_moves_the_replaced_unit() -> None:
    ms = machines("m1", "m2")
    js = jobs(job("old.service"), job("other.service"),
              job("new.service", Replaces="old.service", MachineOf="anchor.service"),
              job("anchor.service", MachineID="m1"))
    sched = {"old.service": "m1", "other.service": "m2"}
    changes = decide(ms, js, sched)
    result = apply_changes(sched, changes)
    assert result["new.service"] == "m1"
    assert result["old.service"] == "m2"
    assert Unschedule("old.service", "m1", "replaced by new.service") in changes


def test_replaced_unit_does_not_return_to_replacer_machine() -> None:
    js = jobs(job("old.service"), job("new.service", Replaces="old*"))
    assert final(machines("m1"), js, {"new.service": "m1"}) == {"new.service": "m1"}


def test_circular_replace_keeps_only_one_per_machine() -> None:
    js = jobs(job("a.service", Replaces="b.service"), job("b.service", Replaces="a.service"))
    assert len(final(machines("m1"), js)) == 1
    assert len(final(machines("m1", "m2"), js)) == 2


def test_global_units_on_every_matching_machine() -> None:
    ms = {"m1": Machine("m1", {"role": "web"}), "m2": Machine("m2", {"role": "db"}),
          "m3": Machine("m3", {"role": "web"})}
    js = jobs(job("g.service", Global="true", MachineMetadata="role=web"),
              job("all.service", Global="true"), job("off.service", "inactive", Global="true"))
    placed = place_globals(ms, js, {})
    assert placed == {"m1": ["all.service", "g.service"], "m2": ["all.service"],
                      "m3": ["all.service", "g.service"]}
    assert decide(ms, js, {}) == []  # globals are never scheduled by the engine
    assert decide(ms, js, {"g.service": "m2"}) == [
        Unschedule("g.service", "m2", "global units are not scheduled")]


def test_conflicting_globals_first_by_name_wins() -> None:
    js = jobs(job("g1.service", Global="true", Conflicts="g2.service"),
              job("g2.service", Global="true"))
    assert place_globals(machines("m1"), js, {}) == {"m1": ["g1.service"]}


def test_units_avoid_machines_running_conflicting_globals_and_count_global_load() -> None:
    ms = {"m1": Machine("m1", {"role": "web"}), "m2": Machine("m2", {})}
    js = jobs(job("g.service", Global="true", MachineMetadata="role=web", Conflicts="x*"),
              job("x.service"), job("a.service"))
    sched = final(ms, js)
    assert sched["x.service"] == "m2"  # never beside the conflicting global on m1
    assert sched["a.service"] == "m2"  # placed first: m1 already carries the global


def test_global_skipped_where_conflicting_unit_already_scheduled() -> None:
    js = jobs(job("g.service", Global="true", Conflicts="x.service"), job("x.service"))
    assert place_globals(machines("m1", "m2"), js, {"x.service": "m1"}) == {
        "m1": [], "m2": ["g.service"]}


def test_machine_assignments_include_state_hash_and_globals() -> None:
    js = jobs(job("a.service", "loaded"), job("g.service", Global="true"),
              job("i.service", "inactive"))
    result = machine_assignments(machines("m1", "m2"), js, {"a.service": "m1", "i.service": "m1"})
    assert result == {
        "m1": {"a.service": Assignment("h-a.service", "loaded"),
               "g.service": Assignment("h-g.service", "launched", True)},
        "m2": {"g.service": Assignment("h-g.service", "launched", True)},
    }


def test_decide_is_idempotent() -> None:
    ms = machines("m1", "m2", "m3")
    js = jobs(*[job(f"u{i}.service", Conflicts="u1*" if i % 3 == 0 else "") for i in range(12)])
    sched = final(ms, js)
    assert decide(ms, js, sched) == []


# ---------------------------------------------------------------- property tests

NAMES = [f"u{i}.service" for i in range(10)]


@st.composite
def clusters(draw: st.DrawFn) -> tuple[dict[str, Machine], dict[str, Job], dict[str, str]]:
    count = draw(st.integers(0, 5))
    ms = {}
    for i in range(count):
        meta = draw(st.dictionaries(st.sampled_from(["role", "disk"]),
                                    st.sampled_from(["a", "b"]), max_size=2))
        ms[f"m{i}"] = Machine(f"m{i}", meta)
    js = {}
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=10))
    for name in names:
        conflicts = draw(st.lists(st.sampled_from(["u1*", "u2.service", "u*", "u5.service"]),
                                  max_size=2))
        # Peers among the cluster's own units mostly, so MachineOf is met often.
        peers = draw(st.lists(st.sampled_from(names + NAMES[:2]), max_size=1))
        peers = [p for p in peers if p != name and not any(
            __import__("fnmatch").fnmatchcase(p, c) for c in conflicts)]
        meta = draw(st.one_of(st.just({}), st.dictionaries(
            st.sampled_from(["role", "disk"]),
            st.frozensets(st.sampled_from(["a", "b"]), min_size=1), max_size=2)))
        req = Requirements(conflicts=tuple(conflicts), machine_of=tuple(peers), metadata=meta)
        state = draw(st.sampled_from(["inactive", "loaded", "launched"]))
        js[name] = Job(name, state, req)
    sched = {}
    for name in js:
        if ms and draw(st.booleans()):
            sched[name] = draw(st.sampled_from([*sorted(ms), "gone"]))
    return ms, js, sched


def refusal(reason: str) -> str:
    """The rule an ``unable_reason`` names."""
    for rule, words in (("metadata", "metadata does not match"), ("peer", "peer "),
                        ("conflict", "conflicts with")):
        if words in reason:
            return rule
    return reason


def test_property_schedule_respects_every_requirement() -> None:
    """Every placement keeps every rule, every unit left out could go nowhere, and a
    second decision changes nothing; the counts prove the generated clusters put each
    rule to work often enough for the checks to mean something."""
    seen: Counter[str] = Counter()

    @settings(max_examples=300, deadline=None)
    @given(clusters())
    def check(cluster: tuple[dict[str, Machine], dict[str, Job], dict[str, str]]) -> None:
        ms, js, sched = cluster
        result = final(ms, js, sched)
        for unit, machine in result.items():
            j = js[unit]
            assert machine in ms
            assert j.target_state != "inactive"
            seen["placed"] += 1
            for key, values in j.requirements.metadata.items():
                assert ms[machine].metadata.get(key) in values
                seen["metadata held"] += 1
            for peer in j.requirements.machine_of:
                assert result.get(peer) == machine
                seen["peer beside"] += 1
            for other, other_machine in result.items():
                if other != unit and other_machine == machine:
                    assert not conflicts(j, js[other]), (unit, other, machine)
                    if j.requirements.conflicts:
                        seen["conflicts checked against a neighbour"] += 1
        # A unit left out is one no machine could take, given where the others went.
        view = ClusterView(ms, js, result)
        for unit, j in js.items():
            if j.target_state == "inactive" or unit in result:
                continue
            reasons = [view.unable_reason(j, machine) for machine in ms]
            assert None not in reasons, (unit, reasons)
            if ms:
                seen["left out, refused everywhere"] += 1
            for reason in reasons:
                seen["refused: " + refusal(reason)] += 1
        for unit, machine in sched.items():
            if result.get(unit) != machine:
                seen["moved or unscheduled"] += 1
        # a second decision on the result changes nothing
        assert decide(ms, js, result) == []

    check()
    for branch in ("placed", "metadata held", "peer beside",
                   "conflicts checked against a neighbour", "left out, refused everywhere",
                   "refused: conflict", "refused: peer", "refused: metadata",
                   "moved or unscheduled"):
        assert seen[branch] >= 30, (branch, seen)


def test_property_unconstrained_units_always_placed() -> None:
    """Without requirements every active unit is placed and the load stays even; with
    no machine nothing is. Both cases must come up."""
    seen: Counter[str] = Counter()

    @settings(max_examples=200, deadline=None)
    @given(clusters())
    def check(cluster: tuple[dict[str, Machine], dict[str, Job], dict[str, str]]) -> None:
        ms, js, _ = cluster
        plain = {n: Job(n, "launched") for n in js}
        result = final(ms, plain)
        if not ms:
            assert result == {}
            seen["no machines"] += 1
            return
        assert set(result) == set(plain)
        loads = [list(result.values()).count(m) for m in ms]
        assert max(loads) - min(loads) <= 1
        seen["machines"] += 1
        if len(plain) > len(ms):
            seen["more units than machines"] += 1

    check()
    assert seen["no machines"] >= 10, seen
    assert seen["machines"] >= 100, seen
    assert seen["more units than machines"] >= 30, seen
