"""flannelctl's offline parts: check-config, the lease table, usage."""

from __future__ import annotations

from pathlib import Path

import pytest
from flotilla.daemons.flannel.ctl import lease_table, main
from flotilla.daemons.kvclient import Node


def test_check_config_shows_the_defaults(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "net.json"
    path.write_text('{"Network": "10.5.0.0/23", "Backend": {"Type": "vxlan", "VNI": 4}}')
    assert main(["check-config", str(path)], {}) == 0
    assert capsys.readouterr().out == (
        "Network:   10.5.0.0/23\nSubnetLen: 25\nSubnetMin: 10.5.0.128\n"
        "SubnetMax: 10.5.1.128\nBackend:   vxlan\n  VNI: 4  Port: 8472  DirectRouting: false\n")


def test_check_config_refuses_naming_the_field(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "net.json"
    path.write_text('{"Network": "10.5.0.0/16", "Backend": {"Type": "udp"}}')
    assert main(["check-config", str(path)], {}) == 1
    assert "invalid network config: Backend.Type: unsupported backend 'udp'" in \
        capsys.readouterr().err


def test_usage_and_bad_invocations(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"], {}) == 0
    assert capsys.readouterr().out.startswith("Usage: flannelctl")
    assert main([], {}) == 2
    assert main(["check-config"], {}) == 2
    assert main(["leases", "extra"], {}) == 2


def test_lease_table_reports_unreadable_leases() -> None:
    table = lease_table([Node(key="/p/subnets/10.5.1.0-24", value="{", ttl=5)])
    assert table.splitlines()[0].split() == ["SUBNET", "PUBLIC_IP", "BACKEND", "VTEP_MAC", "TTL"]
    assert "unreadable: /p/subnets/10.5.1.0-24: invalid lease JSON" in table
