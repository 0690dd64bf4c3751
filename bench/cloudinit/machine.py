"""``flotilla-cloudinit`` in a booted test machine: real systemd, hostnamed, D-Bus, useradd.

The same typical config as ``run.py`` (5 users, 20 files, 5 units with drop-ins, an update
section) applied by the installed package inside a systemd-nspawn machine, cold, on a fresh
copy of the machine's accounts each round. The command reports its own time apart from the
time spent waiting for systemd/hostnamed and for useradd; the wall time is taken inside the
machine around the process, so nsenter's cost is not counted.

    .venv/bin/python bench/cloudinit/machine.py [--rounds N] [--against REF]   (as root)

``--against REF`` also installs ``cloudinit/`` as it was at git revision REF beside the
package and alternates the two in every round, so both see the same machine load.
"""

from __future__ import annotations

import argparse
import io
import pstats
import re
import statistics
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import GOAL_MS, typical_config  # noqa: E402

from tests.machines import Cluster  # noqa: E402
from tests.packages import built_packages  # noqa: E402

REPORT = re.compile(r"own (\d+) ms, systemd (\d+) ms, useradd/usermod (\d+) ms(?:, cpu (\d+) ms)?"
                    r"(?:, file sync (\d+) ms)?")
STAND_IN = "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n"


def timed_run(machine, argv: list[str]) -> tuple[float, str]:  # type: ignore[no-untyped-def]
    """Wall ms of ``argv`` measured inside the machine, and its stdout."""
    script = ('s=$(date +%s%N); "$@" > /tmp/bench.out 2>&1; rc=$?; e=$(date +%s%N); '
              'echo "WALL $(( (e - s) / 1000 ))"; cat /tmp/bench.out; exit $rc')
    out = machine.run(["sh", "-c", script, "sh", *argv], timeout=120).stdout
    wall = int(re.search(r"WALL (\d+)", out).group(1)) / 1000
    return wall, out


TREE = "/usr/lib/flotilla/python"
ALT_TREE = "/opt/bench-against/python"
# Runs the command from a given Python tree, as the installed wrapper does, and prints the
# process's own CPU time (children such as useradd excluded) so both trees are measured
# the same way whatever their own report says.
RUNNER = """#!/usr/bin/python3
import resource
import sys

sys.path.insert(0, sys.argv.pop(1))
from flotilla.cloudinit.main import main

code = main()
usage = resource.getrusage(resource.RUSAGE_SELF)
print(f"PROCESS-CPU {(usage.ru_utime + usage.ru_stime) * 1000:.0f}")
sys.exit(code)
"""


def install_against(machine, ref: str) -> str:  # type: ignore[no-untyped-def]
    """The package's Python tree with ``cloudinit/`` from ``ref``; returns the tree."""
    machine.run(["sh", "-c", f"rm -rf {ALT_TREE} && mkdir -p /opt/bench-against && "
                             f"cp -a {TREE} {ALT_TREE} && rm -rf {ALT_TREE}/flotilla/cloudinit"])
    archive = subprocess.run(["git", "archive", ref, "cloudinit"], cwd=REPO,
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            if member.isfile():
                relative = member.name.removeprefix("cloudinit/")
                data = tar.extractfile(member).read().decode()
                machine.write_file(f"{ALT_TREE}/flotilla/cloudinit/{relative}", data)
    machine.run(["python3", "-m", "compileall", "-q", f"{ALT_TREE}/flotilla/cloudinit"])
    return ALT_TREE


def fresh_accounts(machine, round_no: int) -> None:  # type: ignore[no-untyped-def]
    """Remove the previous round's users, files and units so each round is a first run."""
    users = " ".join(f"user{i}" for i in range(5))
    machine.run(["sh", "-c",
                 f"for u in {users}; do userdel -r $u 2>/dev/null; done; "
                 "rm -rf /etc/bench /home/core/.ssh /etc/coreos; "
                 "for i in 0 1 2 3 4; do systemctl disable --now bench$i.service 2>/dev/null; "
                 "rm -rf /etc/systemd/system/bench$i.service*; done; "
                 "systemctl daemon-reload; hostnamectl set-hostname "
                 f"round{round_no}; sync; true"], timeout=120)


def profile_first_apply(machine, cmd: list[str], top: int, sort: str = "cumulative") -> str:  # type: ignore[no-untyped-def]
    """cProfile (the machine's own Python has no py-spy) of one cold first apply."""
    fresh_accounts(machine, 99)
    argv = [*cmd[:2], "python3", "-m", "cProfile", "-o", "/tmp/bench.prof",
            "/usr/bin/flotilla-cloudinit", *cmd[3:]]
    machine.run(argv, timeout=120)
    stats = machine.path("/tmp/bench.prof")
    out = io.StringIO()
    pstats.Stats(str(stats), stream=out).sort_stats(sort).print_stats(top)
    return out.getvalue()


def measure(machine, tree: str, rows: dict[str, list[float]], round_no: int,
            ) -> None:  # type: ignore[no-untyped-def]
    """One cold first apply and one no-change run from ``tree``, added to ``rows``."""
    cmd = ["env", "COREOS_PRIVATE_IPV4=10.0.0.9", "/usr/local/bin/bench-cloudinit", tree,
           "--from-file", "/root/user-data"]
    fresh_accounts(machine, round_no)
    wall, out = timed_run(machine, cmd)
    own, job, tool, _cpu, sync = (float(v or "nan") for v in REPORT.search(out).groups())
    cpu = float(re.search(r"PROCESS-CPU (\d+)", out).group(1))
    for key, value in (("wall", wall), ("own", own), ("systemd", job), ("tool", tool),
                       ("cpu", cpu), ("sync", sync), ("wall_own", wall - job - tool)):
        rows.setdefault(key, []).append(value)
    wall, out = timed_run(machine, cmd)
    assert "no changes" in out, out
    rows.setdefault("wall2", []).append(wall)
    rows.setdefault("own2", []).append(float(REPORT.search(out).group(1)))


def report(title: str, rows: dict[str, list[float]]) -> None:
    print(title)

    def show(label: str, key: str, note: str = "") -> None:
        values = rows[key]
        quarter = sorted(values)[len(values) // 4]
        print(f"  {label:34s}{statistics.median(values):7.1f} ({min(values):6.1f} "
              f"{quarter:6.1f}) {note}")

    show("first apply, process wall", "wall")
    show("  systemd/hostnamed (D-Bus, jobs)", "systemd")
    show("  useradd", "tool")
    show("  own, as the command reports it", "own", f"goal < {GOAL_MS:.0f}; from module load")
    show("  own, wall - systemd - useradd", "wall_own", "includes interpreter start")
    show("  cpu time of the process", "cpu", "includes interpreter start")
    show("  of own: making files durable", "sync")
    show("second run (no changes), wall", "wall2")
    show("second run, own", "own2")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--against", metavar="REF",
                        help="also measure cloudinit/ as it was at this git revision")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also run one first apply under cProfile and print the top N "
                             "functions by cumulative time")
    args = parser.parse_args()
    deb = built_packages()["deb"]
    with Cluster(1, prefix="cib") as cluster:
        cluster.boot()
        machine = cluster[0]
        machine.install_deb(deb)
        machine.run(["useradd", "--create-home", "core"])
        machine.write_file("/usr/lib/systemd/system/locksmithd.service", STAND_IN)
        machine.write_file("/root/user-data", typical_config(with_users=True))
        machine.write_file("/usr/local/bin/bench-cloudinit", RUNNER, 0o755)
        commands = {"this tree": TREE}
        if args.against:
            commands[args.against] = install_against(machine, args.against)
        rows: dict[str, dict[str, list[float]]] = {name: {} for name in commands}
        common: dict[str, list[float]] = {"anchor": [], "import": []}
        for round_no in range(args.rounds):
            common["anchor"].append(timed_run(machine, ["python3", "-c", "pass"])[0])
            order = list(commands.items())
            if round_no % 2:  # alternate, so neither always runs right after the cleanup
                order.reverse()
            for name, command in order:
                measure(machine, command, rows[name], round_no)
            imp = machine.run(["python3", "-X", "importtime", "-c",
                               "import flotilla.cloudinit.main"],
                              env={"PYTHONPATH": TREE}).stderr
            common["import"].append(sum(int(m.group(1)) for m in re.finditer(
                r"import time:\s+\d+ \|\s+(\d+) \| flotilla\.cloudinit\.main$", imp, re.M))
                / 1000)
        if args.profile:
            print(profile_first_apply(machine, ["env", "COREOS_PRIVATE_IPV4=10.0.0.9",
                                                "flotilla-cloudinit", "--from-file",
                                                "/root/user-data"], args.profile))
        print(f"booted machine, 5 users, 20 files, 5 units with drop-ins; {args.rounds} "
              "rounds; median (min, lower quartile) in ms")
        print(f"anchor python3 -c pass              {statistics.median(common['anchor']):7.1f} "
              f"({min(common['anchor']):6.1f})")
        print(f"import flotilla.cloudinit.main      {statistics.median(common['import']):7.1f} "
              f"({min(common['import']):6.1f})")
        for name in commands:
            report(name, rows[name])


if __name__ == "__main__":
    main()
