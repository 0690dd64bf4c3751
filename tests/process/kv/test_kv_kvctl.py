"""kvctl against kvd prints what ``ETCDCTL_API=2 etcdctl`` prints against etcd."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.process.kv.harness import REPO, Server, start_kvd

pytestmark = pytest.mark.skipif(shutil.which("etcdctl") is None or shutil.which("etcd") is None,
                                reason="Debian etcd-server/etcd-client not installed")

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


def _base(url: str) -> int:
    request = urllib.request.Request(url + "/v2/keys/_kvctl_base", data=b"value=b",
                                     method="PUT")
    with urllib.request.urlopen(request, timeout=5) as resp:
        return int(resp.headers["X-Etcd-Index"])


def _normalise(text: str, base: int) -> str:
    text = _INDEXES.sub(lambda m: f"{m.group(1)}{int(m.group(2)) - base}"
                        if int(m.group(2)) >= base else m.group(0), text)
    return _ORDERED.sub(lambda m: f"/<{int(m.group(1)) - base}>", text)


def _run(argv: list[str], timeout: float = 10) -> tuple[int, str, str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, ETCDCTL_API="2", PYTHONPATH=str(REPO)))
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.timeout(120)
def test_kvctl_output_and_exit_codes_match_etcdctl(pair: tuple[Server, Server]) -> None:
    etcd, kvd = pair
    etcd_base, kvd_base = _base(etcd.url), _base(kvd.url)
    differences = []
    for step in SCRIPT:
        want = _run(["etcdctl", "--endpoints", etcd.url, *step])
        got = _run([sys.executable, "-m", "flotilla.daemons.kvctl", "--endpoints", kvd.url,
                    *step])
        want_n = (want[0], _normalise(want[1], etcd_base), _normalise(want[2], etcd_base))
        got_n = (got[0], _normalise(got[1], kvd_base), _normalise(got[2], kvd_base))
        if want_n != got_n:
            differences.append((step, want_n, got_n))
    assert not differences, "\n".join(f"{s}\n  etcdctl: {w}\n  kvctl:   {g}"
                                      for s, w, g in differences)


@pytest.mark.timeout(60)
def test_unreachable_endpoint_and_bad_arguments_exit_codes() -> None:
    code, _, err = _run([sys.executable, "-m", "flotilla.daemons.kvctl", "--endpoints",
                         "http://127.0.0.1:9", "get", "/x"])
    assert code == 2 and "cluster is unavailable or misconfigured" in err
    code, _, _ = _run([sys.executable, "-m", "flotilla.daemons.kvctl", "frobnicate"])
    assert code == 1


def _wait_lines(path: Path, count: int, deadline_s: float = 15) -> list[str]:
    deadline = time.monotonic() + deadline_s
    lines: list[str] = []
    while time.monotonic() < deadline:
        if path.exists():
            lines = path.read_text().splitlines()
            if len(lines) >= count:
                return lines
        time.sleep(0.05)
    return lines


@pytest.mark.timeout(60)
def test_exec_watch_and_watch_forever_follow_every_change(tmp_path: Path) -> None:
    server = start_kvd(tmp_path, "127.0.0.68")
    kvctl = [sys.executable, "-m", "flotilla.daemons.kvctl", "--endpoints", server.url]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = []
    try:
        after = _base(server.url)
        out = tmp_path / "exec.out"
        script = f'echo "$ETCD_WATCH_ACTION $ETCD_WATCH_KEY $ETCD_WATCH_VALUE" >> {out}'
        procs.append(subprocess.Popen(
            [*kvctl, "exec-watch", "--recursive", "--after-index", str(after), "/jobs", "--",
             "sh", "-c", script], env=env, start_new_session=True))
        watch_out = tmp_path / "watch.out"
        procs.append(subprocess.Popen(
            [*kvctl, "watch", "--forever", "--after-index", str(after), "/jobs/a"], env=env,
            stdout=open(watch_out, "w"), start_new_session=True))  # noqa: SIM115
        for args in (["set", "/jobs/a", "one"], ["set", "/jobs/b", "two"],
                     ["set", "/jobs/a", "three"], ["rm", "/jobs/b"]):
            assert _run([*kvctl, *args])[0] == 0
        assert _wait_lines(out, 4) == ["set /jobs/a one", "set /jobs/b two",
                                       "set /jobs/a three", "delete /jobs/b "]
        assert _wait_lines(watch_out, 2) == ["one", "three"]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        server.stop()
