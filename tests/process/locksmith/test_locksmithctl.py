"""Our locksmithctl against kvd and etcd: locksmith 0.6's output, exit codes and bytes."""

from __future__ import annotations

import uuid
from urllib.parse import quote, quote_plus

from tests.process.fleet.harness import Store

from .harness import ctl

PREFIX = "/coreos.com/updateengine/rebootlock"


def value(store: Store, group: str = "") -> str:
    key = f"{PREFIX}/semaphore" if not group else \
        f"{PREFIX}/groups/{quote_plus(group)}/semaphore"
    node = store.get(quote(key))  # the key holds "%2F" literally, as Go's client stores it
    assert node is not None, f"{key} was not created"
    return node["node"]["value"]


def group_name() -> str:
    return f"g-{uuid.uuid4().hex[:8]}"


def test_status_creates_locksmiths_initial_value_at_the_default_key(store: Store) -> None:
    run = ctl("-endpoint", store.url, "status")
    assert (run.returncode, run.stdout, run.stderr) == (0, "Available: 1\nMax: 1\n", "")
    assert value(store) == '{"semaphore":1,"max":1,"holders":null}'


def test_lock_unlock_set_max_output_exit_codes_and_bytes(store: Store) -> None:
    group = group_name()
    base = ("--endpoint", store.url, "-group", group)

    run = ctl(*base, "lock", "m-b")
    assert (run.returncode, run.stdout, run.stderr) == (0, "", "")
    assert value(store, group) == '{"semaphore":0,"max":1,"holders":["m-b"]}'

    run = ctl(*base, "lock", "m-a")
    assert (run.returncode, run.stdout, run.stderr) == (1, "", "Error locking: semaphore is at 0\n")

    run = ctl(*base, "lock", "m-b")  # idempotent: the holder may lock again
    assert (run.returncode, run.stderr) == (0, "")

    run = ctl(*base, "set-max", "3")
    assert (run.returncode, run.stdout) == (0, "Old-Max: 1\nMax: 3\n")
    assert ctl(*base, "lock", "m-a").returncode == 0
    assert value(store, group) == '{"semaphore":1,"max":3,"holders":["m-a","m-b"]}'

    run = ctl(*base, "status")
    assert (run.returncode, run.stdout) == (0, "Available: 1\nMax: 3\n\nMACHINE ID\nm-a\nm-b\n")

    run = ctl(*base, "unlock", "m-z")
    assert (run.returncode, run.stderr) == (1, "Error unlocking: holder does not exist\n")
    assert ctl(*base, "unlock", "m-a").returncode == 0
    assert value(store, group) == '{"semaphore":2,"max":3,"holders":["m-b"]}'

    run = ctl(*base, "set-max")
    assert (run.returncode, run.stderr) == (1, "New maximum value must be set.\n")
    run = ctl(*base, "set-max", "x")
    assert (run.returncode, run.stderr) == (1, "Invalid maximum value: x\n")
    run = ctl(*base, "set-max", "0")  # under the current holder: the count goes negative
    assert (run.returncode, run.stdout) == (0, "Old-Max: 3\nMax: 0\n")
    assert value(store, group) == '{"semaphore":-1,"max":0,"holders":["m-b"]}'


def test_environment_names_the_endpoint_and_group_and_dead_endpoints_are_skipped(
        store: Store) -> None:
    group = group_name()
    run = ctl("lock", "m1", LOCKSMITHCTL_ENDPOINT=f"http://127.0.0.1:1,{store.url}",
              LOCKSMITHCTL_GROUP=group)
    assert (run.returncode, run.stderr) == (0, "")
    assert value(store, group) == '{"semaphore":0,"max":1,"holders":["m1"]}'
    # a flag beats the variable
    other = group_name()
    run = ctl("-group", other, "status", LOCKSMITHCTL_ENDPOINT=store.url,
              LOCKSMITHCTL_GROUP=group)
    assert run.stdout == "Available: 1\nMax: 1\n"


def test_group_names_are_query_escaped_into_the_key(store: Store) -> None:
    group = f"web tier/{uuid.uuid4().hex[:6]}"
    assert ctl("-endpoint", store.url, "-group", group, "lock", "m1").returncode == 0
    assert value(store, group) == '{"semaphore":0,"max":1,"holders":["m1"]}'
    assert "%2F" in quote_plus(group)


def test_usage_errors_exit_2_and_an_absent_store_exits_1() -> None:
    run = ctl("frobnicate")
    assert (run.returncode, run.stdout) == (
        2, 'locksmithctl: unknown subcommand: "frobnicate"\nRun \'locksmithctl help\' for usage.\n')
    run = ctl("-no-such-flag", "status")
    assert run.returncode == 2
    assert run.stderr.startswith("flag provided but not defined: -no-such-flag\n")
    run = ctl("status", "-x")
    assert (run.returncode, run.stdout) == (2, "flag provided but not defined: -x\n")
    run = ctl("-endpoint", "http://127.0.0.1:1", "status")
    assert run.returncode == 1
    assert run.stderr.startswith("Error initializing etcd client: ")
    assert ctl("help").returncode == 0
    assert ctl().stdout.startswith("NAME:\n\tlocksmithctl - Manage the cluster wide reboot lock.")
    assert ctl("-version").stdout.startswith("locksmithctl version ")


def test_a_value_locksmith_cannot_parse_is_reported_and_left_alone(store: Store) -> None:
    import urllib.parse
    import urllib.request

    group = group_name()
    key = f"{PREFIX}/groups/{group}/semaphore"
    body = urllib.parse.urlencode({"value": '{"semaphore":"lots"}'}).encode()
    urllib.request.urlopen(urllib.request.Request(f"{store.url}/v2/keys{key}", data=body,
                                                  method="PUT"), timeout=5).read()
    run = ctl("-endpoint", store.url, "-group", group, "lock", "m1")
    assert run.returncode == 1
    assert run.stderr == "Error locking: semaphore value: 'semaphore' must be an integer, " \
                         "not 'lots'\n"
    assert value(store, group) == '{"semaphore":"lots"}'
