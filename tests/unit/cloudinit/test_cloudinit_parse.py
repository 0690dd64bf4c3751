"""Parsing: raw scalar text kept, '-' and '_' keys alike, content encodings, user-data
kinds, gzip'd user-data, substitution vectors."""

from __future__ import annotations

import gzip

import pytest
from flotilla.cloudinit.config import from_tree
from flotilla.cloudinit.decode import ContentError, decode_content
from flotilla.cloudinit.rawyaml import YamlSyntaxError, load
from flotilla.cloudinit.substitute import substitute, values_from
from flotilla.cloudinit.userdata import Kind, UserDataError, classify, unpack


def cfg(text: str):
    return from_tree(load("#cloud-config\n" + text))


def test_strings_keep_their_raw_text() -> None:
    c = cfg("hostname: true\nwrite_files:\n  - path: /a\n    permissions: 0644\n"
            "coreos:\n  update:\n    reboot-strategy: off\n  flannel:\n    ip_masq: true\n")
    assert c.hostname == "true"
    assert c.write_files[0].permissions == "0644"
    assert c.write_files[0].mode == 0o644
    assert c.coreos.update.reboot_strategy == "off"
    assert [(f.env, v) for f, v in c.coreos.flannel] == [("FLANNELD_IP_MASQ", "true")]


def test_hyphen_and_underscore_keys_are_the_same() -> None:
    a = cfg("coreos:\n  update:\n    reboot-strategy: reboot\n  units:\n    - name: x.service\n"
            "      drop-ins:\n        - name: a.conf\n          content: x\n"
            "ssh-authorized-keys: [k1]\nwrite-files:\n  - path: /p\n")
    b = cfg("coreos:\n  update:\n    reboot_strategy: reboot\n  units:\n    - name: x.service\n"
            "      drop_ins:\n        - name: a.conf\n          content: x\n"
            "ssh_authorized_keys: [k1]\nwrite_files:\n  - path: /p\n")
    assert a == b
    assert a.coreos.update.reboot_strategy == "reboot"
    assert a.coreos.units[0].drop_ins[0].name == "a.conf"


def test_bools_take_yaml_11_forms_and_numbers_their_kind() -> None:
    c = cfg("users:\n  - name: u\n    system: yes\n    no_create_home: on\n    no_log_init: off\n"
            "coreos:\n  etcd2:\n    heartbeat_interval: 100\n    debug: y\n"
            "  fleet:\n    etcd_request_timeout: 1.5\n    verbosity: 0\n")
    user = c.users[0]
    assert (user.system, user.no_create_home, user.no_log_init) == (True, True, False)
    assert [(f.env, v) for f, v in c.coreos.etcd2] == [
        ("ETCD_DEBUG", True), ("ETCD_HEARTBEAT_INTERVAL", 100)]
    assert [(f.env, v) for f, v in c.coreos.fleet] == [("FLEET_ETCD_REQUEST_TIMEOUT", 1.5)]


def test_all_user_fields() -> None:
    c = cfg("users:\n  - name: elroy\n    passwd: $6$x\n    ssh-authorized-keys: [k]\n"
            "    gecos: Elroy J\n    homedir: /srv/e\n    no-create-home: true\n"
            "    primary-group: staff\n    groups: [a, b]\n    no-user-group: true\n"
            "    system: true\n    no-log-init: true\n    shell: /bin/zsh\n")
    u = c.users[0]
    assert (u.name, u.passwd, u.ssh_authorized_keys, u.gecos, u.homedir) == (
        "elroy", "$6$x", ["k"], "Elroy J", "/srv/e")
    assert (u.primary_group, u.groups, u.shell) == ("staff", ["a", "b"], "/bin/zsh")
    assert u.no_create_home and u.no_user_group and u.system and u.no_log_init


@pytest.mark.parametrize(("data", "encoding", "expected"), [
    (b"YmFy", "base64", b"bar"),
    (b"YmFy", "b64", b"bar"),
    (b"H4sIABMVh1QAA0tKLAIAqoz/dgMAAAA=", "gz+b64", b"bar"),
    (b"H4sIABMVh1QAA0tKLAIAqoz/dgMAAAA=", "gzip+base64", b"bar"),
    (b"H4sIABMVh1QAA0tKLAIAqoz/\ndgMAAAA=\n", "gzip+b64", b"bar"),
    (gzip.compress(b"bar"), "gzip", b"bar"),
    (b"plain", "", b"plain"),
])
def test_decode_vectors(data: bytes, encoding: str, expected: bytes) -> None:
    assert decode_content(data, encoding) == expected


@pytest.mark.parametrize(("data", "encoding"), [
    (b"not base64!", "base64"), (b"YmFy", "gzip"), (b"hello", "rot13")])
def test_undecodable_content(data: bytes, encoding: str) -> None:
    with pytest.raises(ContentError):
        decode_content(data, encoding)


@pytest.mark.parametrize(("text", "kind"), [
    ("", Kind.EMPTY),
    ("#!/bin/sh\necho", Kind.SCRIPT),
    ("#cloud-config\n", Kind.CLOUD_CONFIG),
    ("#cloud-config \r\nhostname: a", Kind.CLOUD_CONFIG),
    ("#cloud-config foo\n", Kind.UNKNOWN),
    ('{"ignition": {"version": "3.0.0"}}', Kind.IGNITION),
    ('{"ignitionVersion": 1}', Kind.IGNITION),
    ('{"other": 1}', Kind.UNKNOWN),
    ("hostname: a\n", Kind.UNKNOWN),
])
def test_user_data_kinds(text: str, kind: Kind) -> None:
    assert classify(text) is kind


def test_gzip_user_data_is_unpacked_and_bad_gzip_is_an_error() -> None:
    assert unpack(gzip.compress(b"#cloud-config\nhostname: a\n")) == "#cloud-config\nhostname: a\n"
    with pytest.raises(UserDataError):
        unpack(b"\x1f\x8bnot really gzip")


def test_malformed_yaml_names_the_line() -> None:
    with pytest.raises(YamlSyntaxError) as err:
        load("#cloud-config\nusers:\n  - name: a\n   bad: [\n")
    assert err.value.line >= 3


VALUES = {"public_ipv4": "192.0.2.3", "private_ipv4": "192.0.2.203",
          "public_ipv6": "2001:db8::3", "private_ipv6": "fd00::3"}


@pytest.mark.parametrize(("text", "expected"), [
    ('ExecStart=/usr/bin/echo "$public_ipv4"', 'ExecStart=/usr/bin/echo "192.0.2.3"'),
    ("ExecStop=/usr/bin/echo $private_ipv4", "ExecStop=/usr/bin/echo 192.0.2.203"),
    ("ExecStop=/usr/bin/echo $unknown", "ExecStop=/usr/bin/echo $unknown"),
    ("$public_ipv6 $private_ipv6", "2001:db8::3 fd00::3"),
    (r"\$private_ipv4", "$private_ipv4"),
    (r"\\$private_ipv4", r"\$private_ipv4"),
    ("$public_ipv4$private_ipv4", "192.0.2.3192.0.2.203"),
    ("http://$public_ipv4:2379", "http://192.0.2.3:2379"),
])
def test_substitution_vectors(text: str, expected: str) -> None:
    assert substitute(text, VALUES) == expected


def test_substitution_values_prefer_metadata_then_environment() -> None:
    values = values_from({"public_ipv4": "1.2.3.4"},
                         {"COREOS_PUBLIC_IPV4": "9.9.9.9", "COREOS_PRIVATE_IPV4": "5.6.7.8"})
    assert values == {"public_ipv4": "1.2.3.4", "private_ipv4": "5.6.7.8",
                      "public_ipv6": "", "private_ipv6": ""}
