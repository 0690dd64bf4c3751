"""Properties over generated inputs: allocation stays inside the rules, and the diff,
carried out by a model of the kernel's tables, always arrives at what was asked for."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network

from flotilla.daemons.flannel.config import parse
from flotilla.daemons.flannel.lease import OutOfSubnets, allocate, candidates
from flotilla.daemons.flannel.plan import Fdb, Neighbour, Op, Route, State, diff
from hypothesis import given, settings
from hypothesis import strategies as st

CONFIG = parse(json.dumps({"Network": "10.5.0.0/24", "SubnetLen": 28,
                           "Backend": {"Type": "vxlan"}}))
SUBNETS = [IPv4Network(f"10.5.0.{16 * i}/28") for i in range(16)]
WIDER = [IPv4Network("10.5.0.32/27"), IPv4Network("10.5.0.0/26")]
taken_sets = st.lists(st.sampled_from([*SUBNETS, *WIDER]), max_size=16)


@settings(max_examples=200, deadline=None)
@given(taken=taken_sets, pick=st.integers(min_value=0, max_value=10**6))
def test_allocation_is_free_aligned_in_range_and_skips_the_first(taken, pick) -> None:
    free = candidates(CONFIG, taken)
    try:
        chosen = allocate(CONFIG, taken, lambda n: pick % n)
    except OutOfSubnets:
        assert free == []
        return
    assert chosen in free and chosen.prefixlen == 28
    assert CONFIG.subnet_min <= chosen.network_address <= CONFIG.subnet_max
    assert chosen != SUBNETS[0]
    assert not any(chosen.overlaps(other) for other in taken)


MACS = [f"aa:aa:aa:aa:aa:{i:02x}" for i in range(4)]
IPS = [IPv4Address(f"10.5.0.{16 * i}") for i in range(1, 5)]
PUBLIC = [IPv4Address(f"192.0.2.{i}") for i in range(1, 4)]
neighbours = st.sets(st.builds(Neighbour, st.sampled_from(IPS), st.sampled_from(MACS)))
fdbs = st.sets(st.builds(Fdb, st.sampled_from(MACS), st.sampled_from(PUBLIC)))
routes = st.sets(st.builds(Route, st.sampled_from(SUBNETS[1:5]),
                           st.sampled_from([*IPS, *PUBLIC]), st.booleans()))


def unique(entries: set, key) -> set:
    """The kernel keeps one neighbour per IP and one route per destination."""
    seen: dict = {}
    for entry in sorted(entries):
        seen.setdefault(key(entry), entry)
    return set(seen.values())


def kernel_apply(state: State, ops: list[Op]) -> State:
    """replace for neighbours and routes, append for FDB, delete by exact entry."""
    out = State(set(state.neighbours), set(state.fdb), set(state.routes))
    for op in ops:
        entry = op.entry
        if isinstance(entry, Neighbour):
            out.neighbours = {n for n in out.neighbours if n.ip != entry.ip}
            if op.action == "add":
                out.neighbours.add(entry)
        elif isinstance(entry, Fdb):
            assert op.action == "remove" or entry not in out.fdb
            (out.fdb.add if op.action == "add" else out.fdb.discard)(entry)
        else:
            out.routes = {r for r in out.routes if r.dst != entry.dst}
            if op.action == "add":
                out.routes.add(entry)
    return out


@settings(max_examples=200, deadline=None)
@given(want_n=neighbours, want_f=fdbs, want_r=routes, have_n=neighbours, have_f=fdbs,
       have_r=routes)
def test_diff_carried_out_gives_exactly_what_was_wanted(want_n, want_f, want_r, have_n,
                                                        have_f, have_r) -> None:
    want = State(unique(want_n, lambda n: n.ip), want_f, unique(want_r, lambda r: r.dst))
    have = State(unique(have_n, lambda n: n.ip), have_f, unique(have_r, lambda r: r.dst))
    ops = diff(want, have)
    result = kernel_apply(have, ops)
    assert (result.neighbours, result.fdb, result.routes) == (want.neighbours, want.fdb,
                                                               want.routes)
    assert diff(want, result) == []
    removes = [i for i, op in enumerate(ops) if op.action == "remove"]
    adds = [i for i, op in enumerate(ops) if op.action == "add"]
    assert not removes or not adds or max(removes) < min(adds)  # removals first
