"""kvctl against kvd prints what ``ETCDCTL_API=2 etcdctl`` prints against etcd.

kvctl's checks that need no etcd (exit codes, watches) are in ``test_kv_kvctl_alone.py``.
"""

from __future__ import annotations

import re
import sys

import pytest

from tests.process.kv.harness import Server, require_tools, run_cli, store_index

SCRIPT = [
    ["set", "/ctl/a", "one"],
    ["get", "/ctl/a"],
    ["get", "/ctl/missing"],
    ["mk", "/ctl/a", "two"],
    ["mk", "/ctl/b", "two"],
    ["-o", "json", "get", "/ctl/a"],
    ["-o", "extended", "get", "/ctl/a"],
    ["-o", "extended", "set", "/ctl/a", "three"],
    ["-o", "json", "set", "/ctl/a", "four"],
    ["update", "/ctl/a", "five"],
    ["update", "/ctl/zz", "one"],
    ["set", "--swap-with-value", "nope", "/ctl/a", "six"],
    ["set", "--swap-with-value", "five", "/ctl/a", "six"],
    ["mkdir", "/ctl/d"],
    ["mkdir", "/ctl/d"],
    ["setdir", "/ctl/sd"],
    ["updatedir", "/ctl/sd"],
    ["mk", "/ctl/d/inner", "x"],
    ["ls", "--sort", "/ctl"],
    ["ls", "--sort", "-p", "/ctl"],
    ["ls", "--sort", "--recursive", "/ctl"],
    ["ls", "--sort", "--recursive", "-p", "/"],
    ["get", "/ctl"],
    ["rm", "/ctl/d"],
    ["rmdir", "/ctl/d"],
    ["rm", "--with-value", "nine", "/ctl/a"],
    ["rm", "--with-index", "9999", "/ctl/a"],
    ["rm", "/ctl/b"],
    ["-o", "extended", "rm", "/ctl/a"],
    ["rm", "--recursive", "/ctl/d"],
    ["rm", "--dir", "/ctl/sd"],
    ["mk", "--in-order", "/queue", "job"],
    ["watch", "--after-index", "1", "/ctl/b"],
    ["watch", "--recursive", "--after-index", "1", "/ctl"],
    ["-o", "json", "ls", "--sort", "/ctl"],
    ["get", "/"],
]

_INDEXES = re.compile(r"(Created-Index: |Modified-Index: |Index: |\"createdIndex\":|"
                      r"\"modifiedIndex\":| != | \[)(\d+)(?=\D|$)", re.M)
_ORDERED = re.compile(r"/(\d{20})")


@pytest.fixture(autouse=True)
def _etcd_installed() -> None:
    require_tools("etcd", "etcdctl")


def _normalise(text: str, base: int) -> str:
    text = _INDEXES.sub(lambda m: f"{m.group(1)}{int(m.group(2)) - base}"
                        if int(m.group(2)) >= base else m.group(0), text)
    return _ORDERED.sub(lambda m: f"/<{int(m.group(1)) - base}>", text)


@pytest.mark.timeout(120)
def test_kvctl_output_and_exit_codes_match_etcdctl(pair: tuple[Server, Server]) -> None:
    etcd, kvd = pair
    etcd_base, kvd_base = store_index(etcd.url), store_index(kvd.url)
    differences = []
    for step in SCRIPT:
        want = run_cli(["etcdctl", "--endpoints", etcd.url, *step])
        got = run_cli([sys.executable, "-m", "flotilla.daemons.kvctl", "--endpoints", kvd.url,
                       *step])
        want_n = (want[0], _normalise(want[1], etcd_base), _normalise(want[2], etcd_base))
        got_n = (got[0], _normalise(got[1], kvd_base), _normalise(got[2], kvd_base))
        if want_n != got_n:
            differences.append((step, want_n, got_n))
    assert not differences, "\n".join(f"{s}\n  etcdctl: {w}\n  kvctl:   {g}"
                                      for s, w, g in differences)
