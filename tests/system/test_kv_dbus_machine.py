"""kvd.service from the installed .deb owns org.flotilla.KV1 on a machine's real system bus.

Root changes data with ``busctl call`` and HTTP reads it back; an unprivileged user may
read over D-Bus but is refused by the bus policy when it tries to write. The image has no
curl, so the HTTP side is read with python3's urllib inside the machine.
"""

from __future__ import annotations

import json

import pytest

from tests.conditions import wait_until
from tests.packages import built_packages

DEST, PATH, IFACE = "org.flotilla.KV1", "/org/flotilla/KV1", "org.flotilla.KV1"
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture(scope="module")
def serving(machine):
    machine.install_deb(built_packages()["deb"])
    machine.run(["systemctl", "start", "kvd.service"])

    def owned() -> bool:
        out = machine.run(["busctl", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                           "org.freedesktop.DBus", "NameHasOwner", "s", DEST],
                          check=False).stdout
        return out.strip() == "b true"

    wait_until(owned, 60, "kvd.service to own org.flotilla.KV1")
    return machine


def _http_get(machine, key: str) -> dict:
    out = machine.run(["python3", "-c",
                       "import sys,urllib.request;"
                       "print(urllib.request.urlopen('http://127.0.0.1:2379/v2/keys'"
                       " + sys.argv[1]).read().decode())", key]).stdout
    return json.loads(out)


@pytest.mark.timeout(180)
def test_the_service_user_owns_the_name(serving):
    uid = serving.run(["busctl", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                       "org.freedesktop.DBus", "GetConnectionUnixUser", "s", DEST]).stdout
    kvd_uid = serving.run(["id", "-u", "kvd"]).stdout.strip()
    assert uid.split() == ["u", kvd_uid] and kvd_uid != "0"
    pid = serving.run(["busctl", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                       "org.freedesktop.DBus", "GetConnectionUnixProcessID", "s", DEST]).stdout
    main_pid = serving.run(["systemctl", "show", "-P", "MainPID", "kvd.service"]).stdout
    assert pid.split() == ["u", main_pid.strip()]


@pytest.mark.timeout(120)
def test_root_sets_over_dbus_and_http_reads_it(serving):
    out = serving.run(["busctl", "call", DEST, PATH, IFACE, "Set", "sstb",
                       "/machine/greeting", "hello from busctl", "0", "false"]).stdout
    assert out.startswith('s(ssbxtt)a(ssbxtt)t "set" "/machine/greeting" '
                          '"hello from busctl"'), out
    node = _http_get(serving, "/machine/greeting")["node"]
    assert node["value"] == "hello from busctl"
    got = serving.run(["busctl", "--json=short", "call", DEST, PATH, IFACE, "Get", "sbbb",
                       "/machine/greeting", "false", "false", "true"]).stdout
    nodes, index = json.loads(got)["data"]
    assert nodes[0][:2] == ["/machine/greeting", "hello from busctl"]
    assert nodes[0][4] == node["modifiedIndex"] and index >= node["modifiedIndex"]


@pytest.mark.timeout(120)
def test_a_non_root_user_may_read_but_not_write(serving):
    serving.run(["busctl", "call", DEST, PATH, IFACE, "Set", "sstb", "/machine/owned",
                 "by root", "0", "false"])
    read = serving.run([*AS_NOBODY, "busctl", "call", DEST, PATH, IFACE, "Get", "sbbb",
                        "/machine/owned", "false", "false", "true"], check=False)
    assert read.returncode == 0 and '"by root"' in read.stdout, read.stderr
    refused = serving.run([*AS_NOBODY, "busctl", "call", DEST, PATH, IFACE, "Set", "sstb",
                           "/machine/owned", "by nobody", "0", "false"], check=False)
    assert refused.returncode != 0
    assert "Access denied" in refused.stderr or "AccessDenied" in refused.stderr, \
        refused.stderr
    assert _http_get(serving, "/machine/owned")["node"]["value"] == "by root"
