"""Cold files stage: flotilla-ignition against Debian's ignition 2.14 on the same config.

The config has 200 files, 20 units and 5 users. Each tool runs as a fresh process on a
fresh root (seeded like the side-by-side tests), several rounds alternating, and the
median wall time of each is printed with their ratio (ours / Debian's; below 1 is faster).
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.process.ignition.sidebyside import (
    available,
    run_debian,
    run_flotilla,
    seed_root,
)

ROUNDS = 5


def bench_config() -> dict:
    files = [{"path": f"/etc/bench/dir{i % 10}/file{i}.conf", "mode": 0o644,
              "contents": {"source": f"data:,value%20{i}%0A"}} for i in range(200)]
    units = [{"name": f"bench{i}.service", "enabled": i % 2 == 0,
              "contents": f"[Service]\nExecStart=/bin/true {i}\n[Install]\n"
                          "WantedBy=multi-user.target\n"} for i in range(20)]
    users = [{"name": f"user{i}", "sshAuthorizedKeys": [f"ssh-ed25519 KEY{i}"]}
             for i in range(5)]
    return {"ignition": {"version": "3.3.0"}, "storage": {"files": files},
            "systemd": {"units": units}, "passwd": {"users": users}}


def timed(runner, work: Path, config: str) -> float:
    root = work / "root"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir()
    seed_root(root)
    start = time.perf_counter()
    result = runner(work, root, config)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{runner.__name__} failed: {result.stderr[-2000:]}")
    return elapsed


def main() -> int:
    if not available():
        print("Debian's ignition is not installed; nothing to compare against")
        return 1
    config = json.dumps(bench_config())
    work = Path(tempfile.mkdtemp(prefix="flotilla-ign-bench-"))
    work.chmod(0o755)
    ours, theirs = [], []
    try:
        for _ in range(ROUNDS):
            theirs.append(timed(run_debian, work, config))
            ours.append(timed(run_flotilla, work, config))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ours_median, theirs_median = statistics.median(ours), statistics.median(theirs)
    print(f"debian ignition 2.14 (fetch+files): median {theirs_median * 1000:.0f} ms")
    print(f"flotilla-ignition files:            median {ours_median * 1000:.0f} ms")
    print(f"ratio flotilla/debian: {ours_median / theirs_median:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
