"""The pure parts of kvd's D-Bus service: argument checks, answers, watches, bus choice."""

from __future__ import annotations

import json

import pytest
from dbus_fast.introspection import Node
from dbus_fast.signature import SignatureTree
from flotilla.daemons.kv import errors as E
from flotilla.daemons.kv.config import ConfigError, parse_config
from flotilla.daemons.kv.dbus_service import (
    INTERFACE,
    INTROSPECTION_XML,
    MAX_VALUE_BYTES,
    METHODS,
    WatchLimitError,
    WatchRegistry,
    _parent_xml,
    changed_body,
    error_name,
    error_text,
    flatten,
    node_struct,
    write_request,
    write_result,
)
from flotilla.daemons.kv.errors import EtcdError
from flotilla.daemons.kv.request import Form, parse_key_request
from flotilla.daemons.kv.store import SECOND_NS, Store
from flotilla.daemons.systemd.served import DEFAULT_SYSTEM_BUS, SYSTEM_BUS_SOCKET, bus_address

NOW = 1_700_000_000 * SECOND_NS


def _command(store: Store, member: str, *args):
    return store.apply(write_request(member, list(args)).command(NOW))


def test_introspection_matches_the_dispatch_table():
    node = Node.parse(INTROSPECTION_XML)
    iface = next(i for i in node.interfaces if i.name == INTERFACE)
    described = {m.name: (m.in_signature, m.out_signature) for m in iface.methods}
    assert described == {name: (spec.in_signature, spec.out_signature)
                         for name, spec in METHODS.items()}
    assert [(s.name, s.signature) for s in iface.signals] == [("Changed", "sbsssst")]


def test_answers_fit_their_signatures():
    store = Store()
    event = _command(store, "Set", "/a/b", "v", 10, False)
    SignatureTree(METHODS["Set"].out_signature).verify(write_result(event, NOW))
    listing = store.get("/", True, True)
    SignatureTree(METHODS["Get"].out_signature).verify([flatten(listing.node, NOW), 3])
    SignatureTree("sbsssst").verify(changed_body("/a", True, event))


def test_set_builds_the_same_command_as_the_http_form():
    got = write_request("Set", ["/k", "v", 30, False]).command(NOW)
    want = parse_key_request("PUT", "/k", Form([("value", "v"), ("ttl", "30")])).command(NOW)
    assert got == want
    assert write_request("Set", ["/d", "", 0, True]).command(NOW)["params"] == {"dir": True}
    assert write_request("Set", ["k", "v", 0, False]).key == "/k", "keys are rooted"


def test_compare_and_swap_maps_each_condition():
    params = write_request("CompareAndSwap", ["/k", "new", 0, "old", 7, "true"]
                           ).command(NOW)["params"]
    assert params == {"value": "new", "prevValue": "old", "prevIndex": 7, "prevExist": True}
    create = write_request("CompareAndSwap", ["/k", "v", 0, "", 0, "false"]).command(NOW)
    assert create["params"] == {"value": "v", "prevExist": False}


@pytest.mark.parametrize(("member", "args", "code", "cause"), [
    ("CompareAndSwap", ["/k", "v", 0, "", 0, ""], E.INDEX_OR_VALUE_REQUIRED, "prev_value"),
    ("CompareAndDelete", ["/k", "", 0], E.INDEX_OR_VALUE_REQUIRED, "prev_value"),
    ("CompareAndSwap", ["/k", "v", 0, "", 0, "maybe"], E.INVALID_FIELD, "prevExist"),
    ("Set", ["/k", "x" * (MAX_VALUE_BYTES + 1), 0, False], E.INVALID_FIELD, '"value"'),
    ("Set", ["/" + "k" * 70000, "v", 0, False], E.INVALID_FIELD, '"key"'),
])
def test_bad_arguments_are_etcd_errors_naming_the_field(member, args, code, cause):
    with pytest.raises(EtcdError) as raised:
        write_request(member, args)
    assert raised.value.code == code and cause in raised.value.cause


def test_writes_through_the_store_answer_like_etcd():
    store = Store()
    created = _command(store, "Set", "/k", "one", 0, False)
    assert write_result(created, NOW) == ["set", ["/k", "one", False, 0, 1, 1], [], 1]
    swapped = _command(store, "CompareAndSwap", "/k", "two", 0, "one", 0, "")
    assert write_result(swapped, NOW)[0] == "compareAndSwap"
    assert write_result(swapped, NOW)[2] == [["/k", "one", False, 0, 1, 1]]
    failed = _command(store, "CompareAndDelete", "/k", "one", 0)
    assert isinstance(failed, EtcdError) and failed.code == E.TEST_FAILED
    deleted = _command(store, "CompareAndDelete", "/k", "two", 0)
    assert write_result(deleted, NOW)[0] == "compareAndDelete"
    _command(store, "Set", "/d/x", "1", 0, False)
    refused = _command(store, "Delete", "/d", False, True)
    assert isinstance(refused, EtcdError) and refused.code == E.DIR_NOT_EMPTY
    assert write_result(_command(store, "Delete", "/d", True, True), NOW)[0] == "delete"


def test_ttl_counts_down_from_now():
    store = Store()
    event = _command(store, "Set", "/t", "v", 10, False)
    assert write_result(event, NOW)[1][3] == 10
    view = store.get("/t").node
    assert node_struct(view, NOW + 4 * SECOND_NS)[3] == 6


def test_flatten_is_depth_first_with_full_keys():
    store = Store()
    for key in ("/r/b", "/r/a/y", "/r/a/x", "/r/_hidden"):
        _command(store, "Set", key, key[-1], 0, False)
    keys = [n[0] for n in flatten(store.get("/r", True, True).node, NOW)]
    assert keys == ["/r", "/r/a", "/r/a/x", "/r/a/y", "/r/b"]
    shallow = [n[0] for n in flatten(store.get("/r", False, True).node, NOW)]
    assert shallow == ["/r", "/r/a", "/r/b"]
    assert node_struct(store.get("/").node, NOW)[0] == "/"


def test_errors_are_named_and_carry_etcds_json():
    err = EtcdError(E.KEY_NOT_FOUND, "/missing", 12)
    assert error_name(err) == "org.flotilla.KV1.Error.KeyNotFound"
    assert json.loads(error_text(err)) == {"errorCode": 100, "message": "Key not found",
                                           "cause": "/missing", "index": 12}
    assert error_name(EtcdError(E.NODE_EXIST)) == "org.flotilla.KV1.Error.NodeExist"
    assert error_name(EtcdError(E.TEST_FAILED)) == "org.flotilla.KV1.Error.TestFailed"
    assert error_name(EtcdError(999)) == "org.flotilla.KV1.Error.Failed"


def test_changed_signal_carries_action_key_value_and_index():
    store = Store()
    _command(store, "Set", "/w/k", "v1", 0, False)
    deleted = _command(store, "Delete", "/w/k", False, False)
    assert changed_body("/w", True, deleted) == ["/w", True, "delete", "/w/k", "", "v1", 2]


def test_watch_registry_shares_one_store_watcher_per_key():
    reg = WatchRegistry(per_caller=2, total=3)
    assert reg.add(":1.1", "/a", True) is True
    assert reg.add(":1.2", "/a", True) is False, "second holder reuses the watcher"
    assert reg.add(":1.1", "/a", True) is False, "repeat watch is idempotent"
    assert reg.add(":1.1", "/a", False) is True, "non-recursive is a separate watch"
    with pytest.raises(WatchLimitError):
        reg.add(":1.1", "/b", True)
    assert reg.remove(":1.2", "/a", True) == (True, False)
    assert reg.remove(":1.2", "/a", True) == (False, False)
    assert reg.add(":1.3", "/c", True) is True
    with pytest.raises(WatchLimitError):
        reg.add(":1.4", "/d", True)
    assert reg.drop_caller(":1.1") == [("/a", False), ("/a", True)]
    assert reg.drop_caller(":1.1") == []
    assert sorted(reg.holders) == [("/c", True)]


@pytest.mark.parametrize(("mode", "env", "present", "want"), [
    ("none", {"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/x"}, True, None),
    ("auto", {}, False, None),
    ("auto", {}, True, DEFAULT_SYSTEM_BUS),
    ("system", {}, False, DEFAULT_SYSTEM_BUS),
    ("auto", {"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/x"}, False, "unix:path=/x"),
])
def test_bus_choice(mode, env, present, want):
    assert bus_address(mode, env, lambda path: present and path == SYSTEM_BUS_SOCKET) == want


def test_dbus_setting_from_flag_and_environment():
    assert parse_config([], {}).dbus == "auto"
    assert parse_config(["--dbus=none"], {}).dbus == "none"
    assert parse_config(["-dbus", "system"], {}).dbus == "system"
    assert parse_config([], {"ETCD_DBUS": "none"}).dbus == "none"
    with pytest.raises(ConfigError, match="--dbus"):
        parse_config(["--dbus=session"], {})


def test_parents_of_the_object_are_introspectable():
    assert '<node name="org"/>' in _parent_xml("/")
    assert '<node name="KV1"/>' in _parent_xml("/org/flotilla")
    assert _parent_xml("/org/flotilla/KV1") == INTROSPECTION_XML
    assert _parent_xml("/elsewhere") is None
