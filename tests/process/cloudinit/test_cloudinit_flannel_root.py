"""Issue #17 item 4 through the command, on a temp root that has Flotilla's real
flanneld.service: coreos.flannel writes the /run/flannel/options.env the unit reads, with
the metadata address substituted; --dry-run shows the write and changes nothing; a second
run changes nothing; a value flanneld would refuse changes nothing and names the field;
--validate names bad keys, types and values with their line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .roots import CMD, run_cloudinit, snapshot

pytestmark = pytest.mark.process

UNITS = Path(__file__).resolve().parents[3] / "units"
ADDRESSES = {"COREOS_PUBLIC_IPV4": "203.0.113.10", "COREOS_PRIVATE_IPV4": "10.0.0.10",
             "COREOS_PUBLIC_IPV6": "2001:db8::10"}

CONFIG = """\
#cloud-config
coreos:
  flannel:
    etcd_endpoints: http://10.0.0.1:2379,http://10.0.0.2:2379
    etcd-prefix: /coreos.com/network2
    interface: $private_ipv4
    public_ip: $public_ipv4
    ip_masq: true
"""
OPTIONS = (b"FLANNELD_ETCD_ENDPOINTS=http://10.0.0.1:2379,http://10.0.0.2:2379\n"
           b"FLANNELD_ETCD_PREFIX=/coreos.com/network2\n"
           b"FLANNELD_IP_MASQ=true\n"
           b"FLANNELD_IFACE=10.0.0.10\n"
           b"FLANNELD_PUBLIC_IP=203.0.113.10")


def make_root(tmp_path: Path) -> Path:
    """A machine with the package's flanneld.service and an /etc/environment that already
    has the addresses, so the flannel file is the only thing the config changes."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/environment").write_text(
        "COREOS_PRIVATE_IPV4=10.0.0.10\nCOREOS_PUBLIC_IPV4=203.0.113.10\n"
        "COREOS_PUBLIC_IPV6=2001:db8::10\n")
    units = root / "usr/lib/systemd/system"
    units.mkdir(parents=True)
    (units / "flanneld.service").write_bytes((UNITS / "flanneld.service").read_bytes())
    return root


def run(root: Path, text: str, *extra: str) -> subprocess.CompletedProcess[str]:
    config = root.parent / "user_data"
    config.write_text(text)
    return run_cloudinit(root, config, *extra, addresses=ADDRESSES)


@pytest.mark.timeout(60)
def test_the_section_writes_the_file_flanneld_service_reads_and_a_second_run_changes_nothing(
        tmp_path: Path) -> None:
    root = make_root(tmp_path)
    unit = (root / "usr/lib/systemd/system/flanneld.service").read_text()
    assert "EnvironmentFile=-/run/flannel/options.env\n" in unit

    before = snapshot(root)
    dry = run(root, CONFIG, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert dry.stdout.splitlines()[0] == \
        f"[change] write /run/flannel/options.env mode 0644 ({len(OPTIONS)} bytes)"
    assert snapshot(root) == before

    first = run(root, CONFIG)
    assert first.returncode == 0, first.stdout + first.stderr
    written = root / "run/flannel/options.env"
    assert written.read_bytes() == OPTIONS
    assert written.stat().st_mode & 0o7777 == 0o644
    assert [line for line in first.stdout.splitlines() if line.startswith("[change]")] == [
        f"[change] write /run/flannel/options.env mode 0644 ({len(OPTIONS)} bytes)"]

    after = snapshot(root)
    second = run(root, CONFIG)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "no changes: the machine already matches the config" in second.stdout
    assert snapshot(root) == after


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("change", "message"), [
    (("ip_masq: true", "ip_masq: yes"),
     "line 8: error: coreos.flannel.ip_masq: 'yes' is not a boolean flanneld reads"),
    (("public_ip: $public_ipv4", "public_ip: $public_ipv6"),
     "coreos.flannel.public_ip: '2001:db8::10' is not an IPv4 address"),
    (("http://10.0.0.2:2379", "10.0.0.2:2379"),
     "line 4: error: coreos.flannel.etcd_endpoints: '10.0.0.2:2379' is not an http://"),
])
def test_a_value_flanneld_would_refuse_changes_nothing_and_names_the_field(
        tmp_path: Path, change: tuple[str, str], message: str) -> None:
    root = make_root(tmp_path)
    good = run(root, CONFIG)
    assert good.returncode == 0, good.stdout + good.stderr
    before = snapshot(root)
    result = run(root, CONFIG.replace(*change))
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stderr and "nothing was changed" in result.stderr
    assert snapshot(root) == before
    assert (root / "run/flannel/options.env").read_bytes() == OPTIONS


@pytest.mark.timeout(60)
def test_validate_names_unknown_keys_bad_types_and_bad_values_with_their_line(
        tmp_path: Path) -> None:
    config = tmp_path / "user_data"
    config.write_text(CONFIG)
    clean = subprocess.run([*CMD, "--validate", str(config)], capture_output=True,
                           text=True, timeout=60, check=False)
    assert (clean.returncode, clean.stdout, clean.stderr) == (0, "", "")

    config.write_text(CONFIG.replace("ip_masq: true", "ip_masq: [true]")
                      .replace("interface: $private_ipv4", "iface: eth0")
                      .replace("public_ip: $public_ipv4", "public_ip: 203.0.113.300"))
    bad = subprocess.run([*CMD, "--validate", str(config)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert bad.returncode == 1
    assert bad.stdout.splitlines() == [
        'line 6: warning: unrecognized key "iface"',
        'line 8: warning: incorrect type for "ip_masq" (want string)',
        "line 7: error: coreos.flannel.public_ip: '203.0.113.300' is not an IPv4 address",
    ]
