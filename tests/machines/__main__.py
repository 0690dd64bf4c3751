"""The README's run command: boots test machines and shows what runs on them."""

from __future__ import annotations

import argparse
import sys
import time

from .cluster import Cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.machines", description=__doc__)
    parser.add_argument("--count", type=int, default=3, help="machines to boot (default 3)")
    parser.add_argument(
        "--machines-only",
        action="store_true",
        help="boot the machines and show systemd, without installing and forming the cluster",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the machines up until Ctrl-C instead of exiting"
    )
    args = parser.parse_args(argv)

    started = time.monotonic()
    with Cluster(args.count) as cluster:
        cluster.boot()
        print(f"booted {len(cluster)} machines in {time.monotonic() - started:.1f}s")
        for machine in cluster:
            state = machine.run(["systemctl", "is-system-running"], check=False).stdout.strip()
            version = machine.run(["systemctl", "--version"]).stdout.splitlines()[0]
            print(f"{machine.name}  {machine.address}  systemd: {state}  ({version})")
        for machine in cluster:
            for other in cluster:
                if other is machine:
                    continue
                ok = machine.run(
                    ["ping", "-c1", "-W2", str(other.address)], check=False
                ).returncode == 0
                print(f"{machine.name} -> {other.name}: {'reachable' if ok else 'UNREACHABLE'}")
        if not args.machines_only:
            from tests.packages import built_packages

            from .demo import form_cluster, show

            form_cluster(cluster, built_packages()["deb"])
            show(cluster)
        if args.keep:
            print("machines stay up; enter one with: nsenter -t <pid> -a bash   (Ctrl-C ends)")
            for machine in cluster:
                print(f"  {machine.name}: pid {machine.init_pid}")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
