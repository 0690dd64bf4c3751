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


FLEETLOCK_POST = """
import json, sys, urllib.request, urllib.error
path, header, body = sys.argv[1], sys.argv[2], sys.argv[3]
request = urllib.request.Request("http://127.0.0.1:3333" + path, data=body.encode(),
                                 method="POST")
if header:
    request.add_header("fleet-lock-protocol", header)
try:
    with urllib.request.urlopen(request, timeout=10) as reply:
        print(reply.status, reply.read().decode())
except urllib.error.HTTPError as err:
    print(err.code, err.read().decode())
"""


def _fleetlock(machine, path: str, body: dict, header: str = "true") -> tuple[int, str]:
    out = machine.run(["python3", "-c", FLEETLOCK_POST, path, header, json.dumps(body)]).stdout
    status, _, text = out.strip().partition(" ")
    return int(status), text


def test_fleetlock_service_serves_the_semaphore_as_an_unprivileged_user(installed):
    installed.run(["systemctl", "start", "kvd.service"])
    installed.write_file("/etc/flotilla/fleetlock.env",
                         "FLEETLOCK_ENDPOINT=http://127.0.0.1:2379\n")
    installed.run(["systemctl", "start", "flotilla-fleetlock.service"])
    show = _properties(installed, "flotilla-fleetlock.service", "ActiveState", "StatusText",
                       "MainPID")
    assert show["ActiveState"] == "active"
    assert show["StatusText"] == "FleetLock on 127.0.0.1:3333"
    owner = installed.run(["stat", "-c", "%U", f"/proc/{show['MainPID']}"]).stdout.strip()
    assert owner != "root", "the FleetLock server needs no privileges"

    client = {"client_params": {"id": "zincati-1", "group": "default"}}
    assert _fleetlock(installed, "/v1/pre-reboot", client)[0] == 200
    stored = json.loads(_kvctl(installed, "get",
                               "/coreos.com/updateengine/rebootlock/semaphore").stdout)
    assert stored["holders"] == ["zincati-1"] and stored["semaphore"] == 0

    status, text = _fleetlock(installed, "/v1/pre-reboot", client, header="")
    assert status == 400 and json.loads(text)["kind"] == "invalid_client_identity"

    assert _fleetlock(installed, "/v1/steady-state", client)[0] == 200
    stored = json.loads(_kvctl(installed, "get",
                               "/coreos.com/updateengine/rebootlock/semaphore").stdout)
    assert not stored["holders"] and stored["semaphore"] == stored["max"]
    installed.run(["systemctl", "stop", "flotilla-fleetlock.service"])


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
