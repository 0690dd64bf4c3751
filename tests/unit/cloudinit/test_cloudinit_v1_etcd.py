"""Issue #20, cloud-config: etcd2 and fleet sections validate clean, the v1 coreos.etcd
section (etcd 0.4's option names) configures kvd, and coreos.units naming etcd.service or
fleet.service start kvd and fleetd where no unit of that name is installed. The classic
2014 CoreOS cloud-config is planned item by item."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flotilla.cloudinit import etcd_v1, plan
from flotilla.cloudinit.config import from_tree
from flotilla.cloudinit.main import parse_config, validate_command
from flotilla.cloudinit.rawyaml import load
from flotilla.cloudinit.validate import validate_text

from tests.unit.cloudinit.classic_config import CLASSIC

H = "#cloud-config\n"
ADDRESSES = {"public_ipv4": "203.0.113.10", "private_ipv4": "10.0.0.10"}

CLASSIC_DROP_IN = (
    "[Service]\n"
    'Environment="ETCD_ADVERTISE_CLIENT_URLS=http://203.0.113.10:4001"\n'
    'Environment="ETCD_DISCOVERY=https://discovery.etcd.io/5ea3b1e1b3ba4a4b8e0c0f5d0a3f5e2c"\n'
    'Environment="ETCD_INITIAL_ADVERTISE_PEER_URLS=http://10.0.0.10:7001"\n'
    'Environment="ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:4001,http://127.0.0.1:2379"\n'
    'Environment="ETCD_LISTEN_PEER_URLS=http://0.0.0.0:7001"\n'
)
DROP_IN_PATH = "/run/systemd/system/kvd.service.d/20-cloudinit-etcd.conf"


def cfg(text: str):  # type: ignore[no-untyped-def]
    return from_tree(load(H + text))


def translate(text: str) -> etcd_v1.KvdSettings:
    return etcd_v1.translate(cfg("coreos:\n  etcd:\n" + text).coreos.etcd)


def machine(*units: str) -> plan.Observed:
    """A machine with the named units installed (loaded, inactive) and nothing else."""
    observed = plan.Observed(hostname="localhost")
    for name in units:
        observed.units[name] = plan.UnitState("loaded", "inactive", "disabled")
    return observed


# ------------------------------------------------------------------ 1. validation


def test_etcd2_and_fleet_sections_validate_clean_and_the_command_exits_0(tmp_path: Path
                                                                          ) -> None:
    text = (H + "coreos:\n  etcd2:\n    name: node1\n    discovery: https://discovery.etcd.io/t\n"
            "    advertise-client-urls: http://$public_ipv4:2379\n"
            "  fleet:\n    public-ip: $public_ipv4\n    metadata: region=us-west\n")
    assert validate_text(text) == []
    path = tmp_path / "user_data"
    path.write_text(text)
    assert validate_command(str(path)) == 0


def test_the_classic_v1_config_has_only_the_originals_remote_key_warning() -> None:
    assert [str(e) for e in validate_text(CLASSIC)] == [
        'line 9: warning: deprecated key "coreos_ssh_import_github" (trying to fetch from a '
        'remote endpoint introduces too many intermittent errors)']


@pytest.mark.parametrize("key", ["snapshot: true", "cluster-active-size: 9", "verbose: true",
                                 "graphite-host: g:2003", "proxy: on"])
def test_etcd_04_options_that_configure_nothing_here_still_warn(key: str) -> None:
    name = key.split(":")[0].replace("-", "_")
    entries = [str(e) for e in validate_text(H + f"coreos:\n  etcd:\n    {key}\n")]
    assert entries == [f'line 4: warning: deprecated key "{name}" (etcd 0.4 tuned its own '
                       'internals with it; kvd has no such setting)']
    assert translate(f"    {key}\n").env == []


def test_unknown_keys_under_the_sections_still_warn() -> None:
    entries = [str(e) for e in validate_text(H + "coreos:\n  fleet:\n    colour: red\n"
                                             "  etcd:\n    adr: 1.2.3.4:4001\n")]
    assert entries == ['line 4: warning: unrecognized key "colour"',
                       'line 6: warning: unrecognized key "adr"']


# ------------------------------------------------------------------ 2. coreos.etcd -> kvd


def test_the_classic_section_becomes_kvds_drop_in() -> None:
    section = parse_config(CLASSIC, ADDRESSES).coreos.etcd
    settings = etcd_v1.translate(section)
    assert settings.errors == []
    assert settings.drop_in() == CLASSIC_DROP_IN


@pytest.mark.parametrize(("option", "line", "variable"), [
    ("addr: 10.0.0.5:4001",
     "coreos.etcd.addr is etcd 0.4's advertise-client-urls; configuring kvd",
     "ETCD_ADVERTISE_CLIENT_URLS=http://10.0.0.5:4001"),
    ("peer-addr: 10.0.0.5:7001",
     "coreos.etcd.peer-addr is etcd 0.4's initial-advertise-peer-urls; configuring kvd",
     "ETCD_INITIAL_ADVERTISE_PEER_URLS=http://10.0.0.5:7001"),
    ("bind-addr: 10.0.0.5:4001",
     "coreos.etcd.bind-addr is etcd 0.4's listen-client-urls; kvd's listen-client-urls is "
     "http://10.0.0.5:4001,http://127.0.0.1:2379",
     "ETCD_LISTEN_CLIENT_URLS=http://10.0.0.5:4001,http://127.0.0.1:2379"),
    ("peer-bind-addr: 10.0.0.5:7001",
     "coreos.etcd.peer-bind-addr is etcd 0.4's listen-peer-urls; kvd's listen-peer-urls is "
     "http://10.0.0.5:7001",
     "ETCD_LISTEN_PEER_URLS=http://10.0.0.5:7001"),
    ("peer-election-timeout: 2000",
     "coreos.etcd.peer-election-timeout is etcd 0.4's election-timeout; configuring kvd",
     "ETCD_ELECTION_TIMEOUT=2000"),
    ("peer-heartbeat-interval: 200",
     "coreos.etcd.peer-heartbeat-interval is etcd 0.4's heartbeat-interval; configuring kvd",
     "ETCD_HEARTBEAT_INTERVAL=200"),
    ("ca-file: /etc/ssl/ca.pem",
     "coreos.etcd.ca-file is etcd 0.4's trusted-ca-file with client-cert-auth; "
     "configuring kvd",
     "ETCD_TRUSTED_CA_FILE=/etc/ssl/ca.pem"),
    ("peer-ca-file: /etc/ssl/ca.pem",
     "coreos.etcd.peer-ca-file is etcd 0.4's peer-trusted-ca-file with "
     "peer-client-cert-auth; configuring kvd",
     "ETCD_PEER_TRUSTED_CA_FILE=/etc/ssl/ca.pem"),
    ("discovery: https://discovery.etcd.io/t", etcd_v1.DISCOVERY_NOTE,
     "ETCD_DISCOVERY=https://discovery.etcd.io/t"),
])
def test_each_option_whose_name_differs_says_so(option: str, line: str, variable: str
                                                 ) -> None:
    settings = translate(f"    {option}\n")
    assert settings.errors == []
    assert line in settings.notes
    assert f'Environment="{variable}"' in settings.drop_in().splitlines()


def test_options_with_the_same_name_carry_over_without_a_note() -> None:
    settings = translate("    name: n1\n    data-dir: /var/lib/kvd/n1\n    snapshot-count: 500\n")
    assert settings.env == [("ETCD_DATA_DIR", "/var/lib/kvd/n1"), ("ETCD_NAME", "n1"),
                            ("ETCD_SNAPSHOT_COUNT", "500")]
    assert settings.notes == []


def test_certificates_make_the_urls_https() -> None:
    settings = translate("    addr: 10.0.0.5:4001\n    cert-file: /c.pem\n    key-file: /k.pem\n"
                         "    peer-addr: 10.0.0.5:7001\n    peer-cert-file: /pc.pem\n"
                         "    peer-key-file: /pk.pem\n")
    env = dict(settings.env)
    assert env["ETCD_ADVERTISE_CLIENT_URLS"] == "https://10.0.0.5:4001"
    assert env["ETCD_LISTEN_CLIENT_URLS"] == "https://0.0.0.0:4001,https://127.0.0.1:2379"
    assert env["ETCD_INITIAL_ADVERTISE_PEER_URLS"] == "https://10.0.0.5:7001"
    assert env["ETCD_LISTEN_PEER_URLS"] == "https://0.0.0.0:7001"
    assert (env["ETCD_CERT_FILE"], env["ETCD_PEER_KEY_FILE"]) == ("/c.pem", "/pk.pem")


@pytest.mark.parametrize(("text", "listen"), [
    ("    addr: 10.0.0.5:4101\n    bind-addr: 10.0.0.5\n",
     "http://10.0.0.5:4101,http://127.0.0.1:2379"),
    ("    bind-addr: 10.0.0.5\n", "http://10.0.0.5:4001,http://127.0.0.1:2379"),
    ("    bind-addr: '[fd00::5]:2379'\n", "http://[fd00::5]:2379"),
])
def test_a_bind_address_without_a_port_takes_the_advertised_one(text: str, listen: str
                                                                 ) -> None:
    assert dict(translate(text).env)["ETCD_LISTEN_CLIENT_URLS"] == listen


@pytest.mark.parametrize(("text", "message"), [
    ("    addr: 10.0.0.5\n", "coreos.etcd.addr: '10.0.0.5' has no port"),
    ("    addr: http://10.0.0.5:4001\n",
     "coreos.etcd.addr: 'http://10.0.0.5:4001' is not host:port (etcd 0.4 takes an address "
     "without a scheme or path)"),
    ("    addr: :4001\n", "coreos.etcd.addr: ':4001' has no host"),
    ("    peer-addr: 10.0.0.5:70001\n",
     "coreos.etcd.peer-addr: port '70001' is not a number from 1 to 65535"),
    ("    bind-addr: fd00::5\n",
     "coreos.etcd.bind-addr: 'fd00::5' has too many colons (write IPv6 as [addr]:port)"),
    ("    peers: 10.0.0.6:7001,10.0.0.7:7001\n",
     "coreos.etcd.peers: etcd 0.4 joins the peers it is given by address alone; kvd needs "
     "each member's name (use coreos.etcd2.initial_cluster) or coreos.etcd.discovery"),
    ("    peers-file: /etc/peers\n", "coreos.etcd.peers-file: etcd 0.4 reads its peers'"),
    ("    peer-election-timeout: -5\n",
     "coreos.etcd.peer-election-timeout: -5 must be a positive number of milliseconds"),
    ("    addr: 10.0.0.5:4001\n    advertise-client-urls: http://10.0.0.5:2379\n",
     "coreos.etcd.addr and coreos.etcd.advertise-client-urls both set kvd's "
     "advertise-client-urls; keep one"),
    ("    peer-heartbeat-interval: 100\n    heartbeat-interval: 150\n",
     "coreos.etcd.peer-heartbeat-interval and coreos.etcd.heartbeat-interval both set kvd's "
     "heartbeat-interval, to different values"),
])
def test_a_value_kvd_cannot_take_is_refused_naming_the_field_and_nothing_applies(
        text: str, message: str) -> None:
    settings = translate("    name: n1\n" + text)
    assert any(e.startswith(message) for e in settings.errors), settings.errors
    assert settings.env == [] and settings.drop_in() == ""
    config = cfg("coreos:\n  etcd:\n    name: n1\n" + text
                 + "  units:\n    - name: etcd.service\n      command: start\n")
    actions = plan.desired_actions(config, {})
    assert not any(isinstance(a, plan.WriteUnitFile) for a in actions)
    with pytest.raises(plan.PlanError) as refused:
        plan.reconcile(actions, machine("kvd.service"))
    assert message in str(refused.value)


def test_a_missing_address_substitution_is_refused_before_anything_applies() -> None:
    """$public_ipv4 with no metadata becomes "": ':4001' names the field, not a kvd that
    advertises a broken URL."""
    config = parse_config(CLASSIC, {"public_ipv4": "", "private_ipv4": "10.0.0.10"})
    with pytest.raises(plan.PlanError, match=re.escape("coreos.etcd.addr: ':4001' has no host")):
        plan.reconcile(plan.desired_actions(config, {}), machine("kvd.service",
                                                                   "fleetd.service"))


def test_etcd_and_etcd2_together_write_two_drop_ins_and_etcd2_is_read_last() -> None:
    config = cfg("coreos:\n  etcd:\n    name: old\n  etcd2:\n    name: new\n")
    paths = [a.path for a in plan.desired_actions(config, {}) if isinstance(a, plan.WriteUnitFile)]
    assert paths == [DROP_IN_PATH,
                     "/run/systemd/system/etcd2.service.d/20-cloudinit.conf",
                     "/run/systemd/system/kvd.service.d/20-cloudinit.conf"]
    assert sorted(Path(p).name for p in paths[0::2]) == [Path(paths[0]).name,
                                                          Path(paths[2]).name]
    assert not any(isinstance(a, plan.WriteUnitFile) and "/etcd.service" in a.path
                   for a in plan.desired_actions(config, {}))


# ------------------------------------------------------------------ 3. etcd.service


def test_the_classic_config_is_planned_item_by_item() -> None:
    actions = plan.desired_actions(parse_config(CLASSIC, ADDRESSES), ADDRESSES)
    assert [a.describe() for a in actions] == [
        "user elroy",
        "users elroy: coreos-ssh-import-* keys are not fetched (deprecated: a remote fetch at "
        "boot fails intermittently); list the keys in ssh_authorized_keys",
        "merge COREOS_PRIVATE_IPV4,COREOS_PUBLIC_IPV4 into /etc/environment",
        etcd_v1.DISCOVERY_NOTE,
        "coreos.etcd.addr is etcd 0.4's advertise-client-urls; configuring kvd",
        "coreos.etcd.addr: etcd 0.4 listened on every address at its port; kvd's "
        "listen-client-urls is http://0.0.0.0:4001,http://127.0.0.1:2379",
        "coreos.etcd.peer-addr is etcd 0.4's initial-advertise-peer-urls; configuring kvd",
        "coreos.etcd.peer-addr: etcd 0.4 listened on every address at its port; kvd's "
        "listen-peer-urls is http://0.0.0.0:7001",
        "enable kvd.service (runtime) so etcd.service starts it",
        "enable fleetd.service (runtime) so fleet.service starts it",
        f"write unit {DROP_IN_PATH} ({len(CLASSIC_DROP_IN)} bytes)",
        "unmask kvd.service (/run/systemd/system/kvd.service)",
        "daemon-reload",
        "start etcd.service",
        "start fleet.service",
    ]
    drop_in = next(a for a in actions if isinstance(a, plan.WriteUnitFile))
    assert drop_in.content == CLASSIC_DROP_IN.encode()


def test_on_a_flotilla_machine_etcd_and_fleet_service_become_kvd_and_fleetd() -> None:
    actions = plan.desired_actions(parse_config(CLASSIC, ADDRESSES), ADDRESSES)
    steps = plan.reconcile(actions, machine("kvd.service", "fleetd.service"))
    by_text = {s.action.describe(): s for s in steps}
    alias = by_text["enable kvd.service (runtime) so etcd.service starts it"]
    assert alias.change and alias.action == plan.AliasUnit("kvd.service", True, "etcd.service")
    assert alias.detail == "etcd.service is not installed here; kvd.service answers to it"
    assert by_text["enable fleetd.service (runtime) so fleet.service starts it"].change
    assert by_text["daemon-reload"].change
    assert by_text["start etcd.service"].change and by_text["start fleet.service"].change
    # The alias is made before the reload, and the reload before the starts.
    order = [s.action for s in steps if s.change]
    assert order.index(alias.action) < order.index(plan.DaemonReload()) \
        < order.index(plan.UnitCommand("etcd.service", "start"))
    assert [s.describe()[:7] for s in steps if isinstance(s.action, plan.Note)] == \
        ["[info] "] * 6


def test_debians_etcd_is_left_alone_when_it_is_installed() -> None:
    actions = plan.desired_actions(parse_config(CLASSIC, ADDRESSES), ADDRESSES)
    steps = plan.reconcile(actions, machine("etcd.service", "kvd.service", "fleetd.service"))
    alias = next(s for s in steps if s.action == plan.AliasUnit("kvd.service", True,
                                                                "etcd.service"))
    assert not alias.change
    assert alias.describe() == ("[ok] enable kvd.service (runtime) so etcd.service starts it: "
                                "etcd.service exists here; left as it is")


def test_the_second_run_changes_no_alias_and_starts_nothing() -> None:
    actions = plan.desired_actions(parse_config(CLASSIC, ADDRESSES), ADDRESSES)
    observed = machine("kvd.service", "fleetd.service")
    for name in ("etcd.service", "fleet.service"):  # the aliases now load, started
        observed.units[name] = plan.UnitState("loaded", "active", "enabled-runtime")
    observed.files[DROP_IN_PATH] = plan.FileState("file", CLASSIC_DROP_IN.encode(), 0o644)
    changed = [s.describe() for s in plan.reconcile(actions, observed)
               if s.change and not isinstance(s.action, plan.EnsureUser | plan.MergeEnvFile)]
    assert changed == []


def test_without_kvd_etcd_service_is_still_a_unit_that_does_not_exist() -> None:
    actions = plan.desired_actions(parse_config(CLASSIC, ADDRESSES), ADDRESSES)
    with pytest.raises(plan.PlanError,
                       match=re.escape('unit "etcd.service" does not exist and the config '
                                       'does not define it')):
        plan.reconcile(actions, machine("fleetd.service"))


def test_a_unit_the_config_defines_or_masks_under_that_name_gets_no_alias() -> None:
    config = cfg("coreos:\n  units:\n    - name: etcd.service\n      command: start\n"
                 "      content: |\n        [Service]\n        ExecStart=/bin/true\n"
                 "    - name: fleet.service\n      mask: true\n")
    assert not any(isinstance(a, plan.AliasUnit) for a in plan.desired_actions(config, {}))
