"""coreos.flannel (issue #17 item 4): the section becomes /run/flannel/options.env with the
original's bytes, every variable is one our flanneld reads, values flanneld would refuse
are refused (field named; --validate gives the line), a second run changes nothing."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest
from flotilla.cloudinit import flannel, plan
from flotilla.cloudinit.actions import Refuse, WriteFile
from flotilla.cloudinit.config import from_tree
from flotilla.cloudinit.main import parse_config
from flotilla.cloudinit.rawyaml import load
from flotilla.cloudinit.validate import validate_text
from flotilla.daemons.flannel.main import settings

pytestmark = pytest.mark.unit

H = "#cloud-config\n"
DOCS = Path(__file__).parent / "doc_examples"
# Every key, deliberately out of the original's declaration order, dashes in two of them.
ALL_KEYS = """\
coreos:
  flannel:
    public_ip: 203.0.113.7
    interface: eth1
    subnet_file: /run/flannel/other.env
    ip_masq: true
    etcd-password: secret
    etcd_username: flannel
    etcd_prefix: /coreos.com/network2
    etcd_keyfile: /etc/ssl/flannel.key
    etcd-certfile: /etc/ssl/flannel.crt
    etcd_cafile: /etc/ssl/ca.crt
    etcd_endpoints: https://10.0.0.1:2379,https://10.0.0.2:2379
"""
ALL_KEYS_ENV = (
    b"FLANNELD_ETCD_ENDPOINTS=https://10.0.0.1:2379,https://10.0.0.2:2379\n"
    b"FLANNELD_ETCD_CAFILE=/etc/ssl/ca.crt\n"
    b"FLANNELD_ETCD_CERTFILE=/etc/ssl/flannel.crt\n"
    b"FLANNELD_ETCD_KEYFILE=/etc/ssl/flannel.key\n"
    b"FLANNELD_ETCD_PREFIX=/coreos.com/network2\n"
    b"FLANNELD_ETCD_USERNAME=flannel\n"
    b"FLANNELD_ETCD_PASSWORD=secret\n"
    b"FLANNELD_IP_MASQ=true\n"
    b"FLANNELD_SUBNET_FILE=/run/flannel/other.env\n"
    b"FLANNELD_IFACE=eth1\n"
    b"FLANNELD_PUBLIC_IP=203.0.113.7"
)


def actions(text: str) -> list[object]:
    """The planned actions for a config given without substitution."""
    return plan.desired_actions(from_tree(load(H + text)), {})


def options_env(text: str) -> bytes:
    writes = [a for a in actions(text)
              if isinstance(a, WriteFile) and a.path == "/run/flannel/options.env"]
    assert len(writes) == 1, writes
    assert writes[0].mode == 0o644
    return writes[0].content


def refusals(text: str) -> list[str]:
    return [a.text for a in actions(text) if isinstance(a, Refuse)]


def flannel_section(**values: str) -> str:
    return "coreos:\n  flannel:\n" + "".join(f"    {k}: {v}\n" for k, v in values.items())


# ------------------------------------------------------------------ the file


def test_every_key_in_declaration_order_joined_without_a_trailing_newline() -> None:
    assert options_env(ALL_KEYS) == ALL_KEYS_ENV
    assert validate_text(H + ALL_KEYS) == []


def test_the_documentation_example_writes_one_line() -> None:
    text = (DOCS / "cloud-config-29.yml").read_text()
    cfg = from_tree(load(text))
    written = [a for a in plan.desired_actions(cfg, {}) if isinstance(a, WriteFile)]
    assert [(a.path, a.content) for a in written] == [
        ("/run/flannel/options.env", b"FLANNELD_ETCD_PREFIX=/coreos.com/network2")]


def test_an_empty_section_writes_nothing() -> None:
    for text in ("coreos:\n  flannel:\n", "coreos:\n  flannel: {}\n",
                 "coreos:\n  flannel:\n    etcd_prefix: ''\n"):
        assert not [a for a in actions(text) if isinstance(a, WriteFile)], text


def test_every_variable_written_is_one_flanneld_reads() -> None:
    environ = dict(line.split("=", 1) for line in ALL_KEYS_ENV.decode().split("\n"))
    opts = settings([], environ)
    assert opts["etcd_endpoints"] == "https://10.0.0.1:2379,https://10.0.0.2:2379"
    assert (opts["etcd_cafile"], opts["etcd_certfile"], opts["etcd_keyfile"]) == (
        "/etc/ssl/ca.crt", "/etc/ssl/flannel.crt", "/etc/ssl/flannel.key")
    assert opts["etcd_prefix"] == "/coreos.com/network2"
    assert (opts["etcd_username"], opts["etcd_password"]) == ("flannel", "secret")
    assert opts["ip_masq"] is True
    assert opts["subnet_file"] == "/run/flannel/other.env"
    assert opts["iface"] == "eth1"
    assert opts["public_ip"] == IPv4Address("203.0.113.7")


def test_substitution_fills_public_ip_and_an_unknown_address_leaves_it_out() -> None:
    text = H + flannel_section(public_ip="$public_ipv4", interface="$private_ipv4")
    assert validate_text(text) == []
    cfg = parse_config(text, {"public_ipv4": "203.0.113.9", "private_ipv4": "10.0.0.9"})
    assert flannel.translate(cfg.coreos.flannel).content == \
        b"FLANNELD_IFACE=10.0.0.9\nFLANNELD_PUBLIC_IP=203.0.113.9"
    cfg = parse_config(text, {"public_ipv4": "", "private_ipv4": "10.0.0.9"})
    assert flannel.translate(cfg.coreos.flannel).content == b"FLANNELD_IFACE=10.0.0.9"


def test_a_value_systemd_would_alter_is_quoted_and_plain_values_stay_bare() -> None:
    assert flannel.env_value("s3cr#t!=x") == "s3cr#t!=x"
    assert flannel.env_value('pa"ss') == 'pa"ss'  # a quote inside is read literally
    assert flannel.env_value('"quoted') == '"\\"quoted"'
    assert flannel.env_value("back\\slash $HOME") == '"back\\\\slash \\$HOME"'
    assert flannel.env_value(" padded ") == '" padded "'
    assert options_env(flannel_section(etcd_password="'it''s '")) == \
        b"FLANNELD_ETCD_PASSWORD=\"it's \""


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize(("key", "value", "message"), [
    ("ip_masq", "yes", "coreos.flannel.ip_masq: 'yes' is not a boolean flanneld reads"),
    ("ip_masq", "on", "coreos.flannel.ip_masq: 'on' is not a boolean flanneld reads"),
    ("public_ip", "203.0.113.300", "coreos.flannel.public_ip: '203.0.113.300' is not an "
                                   "IPv4 address"),
    ("public_ip", "eth0", "coreos.flannel.public_ip: 'eth0' is not an IPv4 address"),
    ("interface", "10.0.0.256", "coreos.flannel.interface: '10.0.0.256' is neither an "
                                "interface name nor an IPv4 address"),
    ("interface", "a-name-too-long-for-linux", "coreos.flannel.interface: "
                                               "'a-name-too-long-for-linux' is neither"),
    ("etcd_endpoints", "10.0.0.1:2379", "coreos.flannel.etcd_endpoints: '10.0.0.1:2379' "
                                        "is not an http:// or https:// URL"),
    ("etcd_endpoints", "http://a:2379,ftp://b", "coreos.flannel.etcd_endpoints: 'ftp://b'"),
    ("etcd_prefix", '"/a\\nFLANNEL_OPTS=--evil"', "coreos.flannel.etcd_prefix: a value "
                                                  "cannot contain a line break"),
])
def test_a_value_flanneld_would_refuse_is_refused_naming_the_field_and_its_line(
        key: str, value: str, message: str) -> None:
    text = flannel_section(etcd_prefix="/n", **{key: value}) if key != "etcd_prefix" \
        else flannel_section(**{key: value})
    errors = refusals(text)
    assert len(errors) == 1 and errors[0].startswith(message), errors
    entries = validate_text(H + text)
    line = 3 + list(dict.fromkeys(["etcd_prefix", key])).index(key) + 1
    assert [(e.line, e.kind, e.message.startswith(message)) for e in entries] == [
        (line, "error", True)]
    assert entries[0].blocking
    with pytest.raises(plan.PlanError, match="coreos.flannel." + key):
        plan.reconcile(actions(text), plan.Observed(hostname="localhost"))


def test_a_substituted_address_flanneld_cannot_use_is_refused_when_applied() -> None:
    text = flannel_section(public_ip="$public_ipv6")
    assert validate_text(H + text) == []
    values = {"public_ipv6": "2001:db8::5"}
    acts = plan.desired_actions(parse_config(H + text, values), values)
    assert [a.text for a in acts if isinstance(a, Refuse)] == [
        "coreos.flannel.public_ip: '2001:db8::5' is not an IPv4 address"]
    assert not [a for a in acts if isinstance(a, WriteFile) and "flannel" in a.path]


def test_unknown_keys_and_bad_types_warn_with_their_line() -> None:
    text = H + flannel_section(etcd_prefix="/n", iface="eth0", ip_masq="[true]",
                               backend="vxlan")
    assert [str(e) for e in validate_text(text)] == [
        'line 5: warning: unrecognized key "iface"',
        'line 6: warning: incorrect type for "ip_masq" (want string)',
        'line 7: warning: unrecognized key "backend"',
    ]


# ------------------------------------------------------------------ idempotence


def test_a_second_run_changes_nothing_and_a_changed_value_rewrites_the_file() -> None:
    acts = actions(ALL_KEYS)
    written = plan.FileState("file", ALL_KEYS_ENV, 0o644, 0, 0)
    observed = plan.Observed(hostname="localhost",
                             files={"/run/flannel/options.env": written})
    steps = plan.reconcile(acts, observed)
    assert [s.change for s in steps] == [False]
    fresh = plan.reconcile(acts, plan.Observed(hostname="localhost"))
    assert [(s.change, s.payload) for s in fresh] == [(True, ALL_KEYS_ENV)]
    other = plan.reconcile(actions(ALL_KEYS.replace("eth1", "eth2")), observed)
    assert [s.change for s in other] == [True]
