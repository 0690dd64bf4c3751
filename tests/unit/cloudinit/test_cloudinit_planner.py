"""The pure planner: dry-run text, generated drop-ins and files, idempotence against an
observed machine, refusal of commands on units that do not exist."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from flotilla.cloudinit import plan
from flotilla.cloudinit.config import from_tree
from flotilla.cloudinit.execute import Host, apply, observe
from flotilla.cloudinit.rawyaml import load


def cfg(text: str):
    return from_tree(load("#cloud-config\n" + text))


CONFIG = """\
hostname: node1
users:
  - name: elroy
    passwd: $6$salt$hash
    groups: [sudo, docker]
    ssh-authorized-keys: ["ssh-rsa AAAA elroy"]
ssh_authorized_keys: ["ssh-ed25519 BBBB core"]
write_files:
  - path: /etc/motd
    permissions: 0600
    content: hi
manage_etc_hosts: localhost
coreos:
  etcd2:
    name: node1
    discovery: https://discovery.etcd.io/tok
  update:
    reboot-strategy: "off"
  units:
    - name: docker.service
      command: restart
      drop-ins:
        - name: 10-debug.conf
          content: "[Service]\\nEnvironment=DOCKER_OPTS=--debug\\n"
"""


def test_dry_run_text_is_stable_and_ordered() -> None:
    lines = [a.describe() for a in plan.desired_actions(cfg(CONFIG), {"public_ipv4": "1.2.3.4"})]
    assert lines == [
        "set hostname node1",
        "user elroy",
        "ssh keys for elroy as coreos-cloudinit (1 keys)",
        "ssh keys for core as coreos-cloudinit (1 keys)",
        "write /etc/motd mode 0600 (2 bytes)",
        "merge REBOOT_STRATEGY into /etc/coreos/update.conf",
        "write /etc/hosts for localhost",
        "merge COREOS_PUBLIC_IPV4 into /etc/environment",
        "write unit /etc/systemd/system/docker.service.d/10-debug.conf (42 bytes)",
        "write unit /run/systemd/system/etcd2.service.d/20-cloudinit.conf (99 bytes)",
        "unmask etcd2.service (/run/systemd/system/etcd2.service)",
        "write unit /run/systemd/system/kvd.service.d/20-cloudinit.conf (99 bytes)",
        "unmask kvd.service (/run/systemd/system/kvd.service)",
        "mask locksmithd.service (/run/systemd/system/locksmithd.service -> /dev/null)",
        "daemon-reload",
        "restart docker.service",
        "stop locksmithd.service",
    ]


def test_useradd_arguments_follow_the_originals_order() -> None:
    user = cfg(CONFIG).users[0]
    action = plan.EnsureUser(user, "/home/elroy")
    assert action.useradd_args() == ["--password", "$6$salt$hash", "--create-home",
                                     "--groups", "sudo,docker", "elroy"]
    bare = cfg("users:\n  - name: s\n    system: true\n    no-create-home: true\n"
               "    shell: /sbin/nologin\n    gecos: S S\n").users[0]
    assert plan.EnsureUser(bare, "/home/s").useradd_args() == [
        "--password", "*", "--comment", "S S", "--no-create-home", "--system",
        "--shell", "/sbin/nologin", "s"]


def test_service_drop_ins_use_struct_order_and_skip_zero_values() -> None:
    c = cfg("coreos:\n  etcd2:\n    proxy: 'off'\n    name: node1\n    debug: true\n"
            "    heartbeat-interval: 100\n    discovery: https://discovery.etcd.io/tok\n"
            "    advertise-client-urls: http://203.0.113.29:2379\n    snapshot-count: 0\n")
    assert plan.service_contents(c.coreos.etcd2) == (
        '[Service]\n'
        'Environment="ETCD_ADVERTISE_CLIENT_URLS=http://203.0.113.29:2379"\n'
        'Environment="ETCD_DEBUG=true"\n'
        'Environment="ETCD_DISCOVERY=https://discovery.etcd.io/tok"\n'
        'Environment="ETCD_HEARTBEAT_INTERVAL=100"\n'
        'Environment="ETCD_NAME=node1"\n'
        'Environment="ETCD_PROXY=off"\n')
    fleet = cfg("coreos:\n  fleet:\n    verbosity: 0\n    etcd_request_timeout: 1.5\n"
                "    public-ip: 10.0.0.1\n").coreos.fleet
    assert plan.service_contents(fleet) == ('[Service]\n'
                                            'Environment="FLEET_ETCD_REQUEST_TIMEOUT=1.5"\n'
                                            'Environment="FLEET_PUBLIC_IP=10.0.0.1"\n')
    lock = cfg("coreos:\n  locksmith:\n    group: g1\n    window_start: Thu 04:00\n"
               "    window_length: 1h\n").coreos.locksmith
    assert plan.service_contents(lock) == ('[Service]\nEnvironment="LOCKSMITHD_GROUP=g1"\n'
                                           'Environment="REBOOT_WINDOW_START=Thu 04:00"\n'
                                           'Environment="REBOOT_WINDOW_LENGTH=1h"\n')


def test_fleet_writes_fleet_and_fleetd_drop_ins_and_flannel_an_options_file() -> None:
    c = cfg("coreos:\n  fleet:\n    metadata: region=us\n  flannel:\n    etcd_prefix: /n\n"
            "    interface: eth1\n")
    acts = plan.desired_actions(c, {})
    paths = [a.path for a in acts if isinstance(a, plan.WriteUnitFile | plan.WriteFile)]
    assert paths == ["/run/flannel/options.env",
                     "/run/systemd/system/fleet.service.d/20-cloudinit.conf",
                     "/run/systemd/system/fleetd.service.d/20-cloudinit.conf"]
    flannel = next(a for a in acts if isinstance(a, plan.WriteFile))
    assert flannel.content == b"FLANNELD_ETCD_PREFIX=/n\nFLANNELD_IFACE=eth1"


def test_oem_release_content() -> None:
    acts = plan.desired_actions(cfg('coreos:\n  oem:\n    id: rack\n    name: Rack "Space"\n'
                                    "    version-id: 1.0\n    home-url: http://x\n"
                                    "    bug-report-url: http://y\n"), {})
    assert acts[0] == plan.WriteFile("/etc/oem-release", (
        b'ID=rack\nVERSION_ID=1.0\nNAME="Rack \\"Space\\""\nHOME_URL="http://x"\n'
        b'BUG_REPORT_URL="http://y"\n'))


@pytest.mark.parametrize(("existing", "values", "prefix", "expected"), [
    ("SERVER=https://example.com\nGROUP=thegroupc\nREBOOT_STRATEGY=awesome",
     (("REBOOT_STRATEGY", "etcd-lock"),), True,
     "SERVER=https://example.com\nGROUP=thegroupc\nREBOOT_STRATEGY=etcd-lock\n"),
    ("", (("SERVER", "s"), ("GROUP", "g")), True, "GROUP=g\nSERVER=s\n"),
    ("A=1\nCOREOS_PUBLIC_IPV4=old\n", (("COREOS_PUBLIC_IPV4", "1.2.3.4"),
                                       ("COREOS_PRIVATE_IPV4", "5.6.7.8")), False,
     "A=1\nCOREOS_PUBLIC_IPV4=1.2.3.4\nCOREOS_PRIVATE_IPV4=5.6.7.8\n"),
])
def test_env_file_merge_vectors(existing, values, prefix, expected) -> None:
    assert plan.merge_env(existing, values, prefix) == expected


def test_environment_is_not_merged_when_a_file_writes_it() -> None:
    acts = plan.desired_actions(cfg("write_files:\n  - path: /etc/environment\n    content: X=1\n"),
                                {"public_ipv4": "1.2.3.4"})
    assert [a.describe() for a in acts] == ["write /etc/environment mode 0644 (3 bytes)"]


def test_network_units_go_to_network_dir_restart_networkd_and_ignore_commands() -> None:
    acts = plan.desired_actions(cfg("coreos:\n  units:\n    - name: 10-eth.network\n"
                                    "      content: x\n      command: start\n"
                                    "      enable: true\n"), {})
    assert [a.describe() for a in acts] == [
        "write unit /etc/systemd/network/10-eth.network (1 bytes)", "daemon-reload",
        "restart systemd-networkd.service"]


def test_command_on_a_unit_that_does_not_exist_is_refused() -> None:
    acts = plan.desired_actions(cfg("coreos:\n  units:\n    - name: nope.service\n"
                                    "      command: start\n"), {})
    with pytest.raises(plan.PlanError, match=r'unit "nope\.service" does not exist'):
        plan.reconcile(acts, plan.Observed())
    # Defining the unit in the same config makes it fine.
    acts = plan.desired_actions(cfg("coreos:\n  units:\n    - name: nope.service\n"
                                    "      content: x\n      command: start\n"), {})
    assert [s.change for s in plan.reconcile(acts, plan.Observed())] == [True, True, True]


def test_reconcile_against_a_matching_machine_changes_nothing() -> None:
    c = cfg("hostname: h\nwrite_files:\n  - path: /etc/x\n    content: hi\n"
            "coreos:\n  units:\n    - name: a.service\n      content: u\n      command: start\n"
            "      enable: true\n")
    acts = plan.desired_actions(c, {})
    observed = plan.Observed(
        hostname="h",
        files={"/etc/x": plan.FileState("file", b"hi", 0o644, 0, 0),
               "/etc/systemd/system/a.service": plan.FileState("file", b"u", 0o644, 0, 0)},
        units={"a.service": plan.UnitState("loaded", "active", "enabled")})
    steps = plan.reconcile(acts, observed)
    assert [s.describe() for s in steps] == [
        "[ok] set hostname h",
        "[ok] write /etc/x mode 0644 (2 bytes)",
        "[ok] write unit /etc/systemd/system/a.service (1 bytes)",
        "[ok] enable a.service",
        "[ok] daemon-reload: no unit changed",
        "[ok] start a.service: already active",
    ]
    # A different mode is a change, and restart-like commands then run.
    observed.files["/etc/x"] = plan.FileState("file", b"hi", 0o600, 0, 0)
    steps = plan.reconcile(acts, observed)
    assert [s.change for s in steps] == [False, True, False, False, False, False]


def test_ssh_keys_for_a_missing_user_are_refused() -> None:
    acts = plan.desired_actions(cfg("ssh_authorized_keys: [k]\n"), {})
    with pytest.raises(plan.PlanError, match='user "core" does not exist'):
        plan.reconcile(acts, plan.Observed())


class StandIn:
    """Records the systemd calls; every unit exists and is inactive until started."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.active: set[str] = set()

    async def unit_state(self, name: str) -> tuple[str, str, str]:
        return "loaded", "active" if name in self.active else "inactive", "disabled"

    async def daemon_reload(self) -> None:
        self.calls.append("daemon-reload")

    async def enable_unit_files(self, names: list[str], runtime: bool) -> None:
        self.calls.append(f"enable {names} runtime={runtime}")

    async def unit_command(self, name: str, command: str) -> None:
        self.calls.append(f"{command} {name}")
        if command != "stop":
            self.active.add(name)

    async def start_transient_service(self, name: str, argv: list[str]) -> None:
        self.calls.append(f"transient {name}")

    async def static_hostname(self) -> str:
        return "old"

    async def set_static_hostname(self, hostname: str) -> None:
        self.calls.append(f"hostname {hostname}")


def test_executor_makes_one_reload_then_commands_in_order(tmp_path: Path) -> None:
    c = cfg("coreos:\n  units:\n"
            "    - name: a.service\n      content: A\n      enable: true\n      command: start\n"
            "    - name: b.service\n      drop-ins:\n        - name: x.conf\n          content: X\n"
            "      command: restart\n"
            "    - name: c.service\n      mask: true\n")
    standin = StandIn()
    host = Host(tmp_path, standin, standin)

    async def run() -> int:
        acts = plan.desired_actions(c, {})
        steps = plan.reconcile(acts, await observe(acts, host))
        return await apply(steps, host)

    assert asyncio.run(run()) == 7
    assert standin.calls == ["enable ['a.service'] runtime=False", "daemon-reload",
                             "start a.service", "restart b.service"]
    assert (tmp_path / "etc/systemd/system/b.service.d/x.conf").read_text() == "X"
    assert (tmp_path / "etc/systemd/system/c.service").readlink() == Path("/dev/null")
    standin.calls.clear()
    # The stand-in never reports the unit enabled, so enable repeats, and a change in
    # the run makes restart-like commands run again; start does not (already active).
    assert asyncio.run(run()) == 2
    assert standin.calls == ["enable ['a.service'] runtime=False", "restart b.service"]
