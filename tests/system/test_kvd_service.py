"""kvd as an installed systemd service: Type=notify start, etcd2 alias and drop-ins."""

from __future__ import annotations

import json
import time

import pytest

from tests.packages import built_packages


@pytest.fixture(scope="module")
def installed(machine):
    machine.install_deb(built_packages()["deb"])
    return machine


def _kvctl(machine, *args: str, endpoint: str = "http://127.0.0.1:2379"):
    return machine.run(["kvctl", "--endpoints", endpoint, *args], check=False)


def _properties(machine, unit: str, *names: str) -> dict[str, str]:
    """The unit's properties as systemd reports them (``systemctl show -p``, one
    ``Name=value`` line each)."""
    argv = ["systemctl", "show", unit]
    for name in names:
        argv += ["-p", name]
    lines = machine.run(argv).stdout.splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def test_kvd_starts_as_notify_service_and_serves(installed):
    installed.run(["systemctl", "start", "kvd.service"])
    # Type=notify: the start job finished only after kvd said READY=1, so it serves now;
    # the status text is kvd's own STATUS= line, so the notification came from kvd.
    show = _properties(installed, "kvd.service", "Type", "ActiveState", "SubState",
                       "StatusText")
    assert show == {"Type": "notify", "ActiveState": "active", "SubState": "running",
                    "StatusText": "serving client requests"}
    assert _kvctl(installed, "set", "/greeting", "hello").returncode == 0
    got = _kvctl(installed, "get", "/greeting")
    assert got.returncode == 0 and got.stdout.strip() == "hello"
    # DynamicUser keeps the state under /var/lib/private (0700) behind a symlink.
    mode = installed.run(["stat", "-L", "-c", "%a %U", "/var/lib/kvd"]).stdout.split()
    assert mode[0] == "700", "the data directory is private to kvd"
    assert mode[1] != "root", "kvd does not run as root"


def test_value_survives_service_restart(installed):
    _kvctl(installed, "set", "/durable", "kept")
    installed.run(["systemctl", "restart", "kvd.service"])
    got = _kvctl(installed, "get", "/durable")
    assert got.stdout.strip() == "kept"


def test_etcd2_alias_and_cloudinit_dropin_are_honoured(installed):
    installed.run(["systemctl", "enable", "kvd.service"])
    names = installed.run(["systemctl", "show", "-P", "Names", "kvd.service"]).stdout.split()
    assert "etcd2.service" in names
    installed.write_file(
        "/run/systemd/system/etcd2.service.d/20-cloudinit.conf",
        '[Service]\nEnvironment="ETCD_LISTEN_CLIENT_URLS=http://127.0.0.1:4001"\n'
        'Environment="ETCD_ADVERTISE_CLIENT_URLS=http://127.0.0.1:4001"\n',
    )
    installed.run(["systemctl", "daemon-reload"])
    installed.run(["systemctl", "restart", "etcd2.service"])
    deadline = time.monotonic() + 30
    while True:
        got = _kvctl(installed, "get", "/durable", endpoint="http://127.0.0.1:4001")
        if got.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert got.stdout.strip() == "kept", got.stderr
    health = installed.run(
        ["python3", "-c",
         "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:4001/health')"
         ".read().decode())"]
    ).stdout
    assert json.loads(health)["health"] == "true"
