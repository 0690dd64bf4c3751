"""kvctl against kvd alone: exit codes without a server, and watches that follow changes.

These need no etcd, so they run apart from the side-by-side module (which fails when
Debian's etcd is missing).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conditions import wait_until
from tests.process.kv.harness import REPO, run_cli, start_kvd, store_index

KVCTL = [sys.executable, "-m", "flotilla.daemons.kvctl"]


@pytest.mark.timeout(60)
def test_unreachable_endpoint_and_bad_arguments_exit_codes() -> None:
    code, _, err = run_cli([*KVCTL, "--endpoints", "http://127.0.0.1:9", "get", "/x"])
    assert code == 2 and "cluster is unavailable or misconfigured" in err
    code, _, _ = run_cli([*KVCTL, "frobnicate"])
    assert code == 1


def _lines(path: Path, count: int) -> list[str] | None:
    """The file's lines once it has ``count`` of them (the watchers append as they go)."""
    lines = path.read_text().splitlines() if path.exists() else []
    return lines if len(lines) >= count else None


@pytest.mark.timeout(60)
def test_exec_watch_and_watch_forever_follow_every_change(tmp_path: Path) -> None:
    server = start_kvd(tmp_path, "127.0.0.68")
    kvctl = [*KVCTL, "--endpoints", server.url]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = []
    try:
        after = store_index(server.url)
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
            assert run_cli([*kvctl, *args])[0] == 0
        assert wait_until(lambda: _lines(out, 4), 15, "exec-watch's 4 runs") == [
            "set /jobs/a one", "set /jobs/b two", "set /jobs/a three", "delete /jobs/b "]
        assert wait_until(lambda: _lines(watch_out, 2), 15, "watch's 2 values") == [
            "one", "three"]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        server.stop()
