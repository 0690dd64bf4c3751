"""flanneld's flags and FLANNELD_* variables, and --help."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from flotilla.daemons.flannel.main import main, settings
from flotilla.daemons.settings import SettingsError


def test_defaults_are_flannels() -> None:
    opts = settings([], {})
    assert opts["etcd_endpoints"] == "http://127.0.0.1:4001,http://127.0.0.1:2379"
    assert opts["etcd_prefix"] == "/coreos.com/network"
    assert opts["subnet_file"] == "/run/flannel/subnet.env"
    assert opts["ip_masq"] is False and opts["public_ip"] is None
    assert opts["subnet_lease_renew_margin"] == 60


def test_one_or_two_dashes_and_environment_variables() -> None:
    opts = settings(["-etcd-prefix", "/x/net", "--iface=eth1", "-ip-masq",
                     "--public-ip", "10.0.0.9"],
                    {"FLANNELD_ETCD_ENDPOINTS": "http://10.0.0.1:2379",
                     "FLANNELD_ETCD_PREFIX": "/ignored", "FLANNELD_SUBNET_FILE": "/tmp/s.env",
                     "FLANNELD_ETCD_CAFILE": "/ca.pem"})
    assert opts["etcd_prefix"] == "/x/net"  # the flag wins over the variable
    assert opts["etcd_endpoints"] == "http://10.0.0.1:2379"
    assert opts["iface"] == "eth1" and opts["ip_masq"] is True
    assert opts["public_ip"] == IPv4Address("10.0.0.9")
    assert (opts["subnet_file"], opts["etcd_cafile"]) == ("/tmp/s.env", "/ca.pem")
    assert settings([], {"FLANNELD_IP_MASQ": "true"})["ip_masq"] is True


@pytest.mark.parametrize(("argv", "environ", "message"), [
    (["-public-ip", "nope"], {}, "--public-ip: public_ip"),
    ([], {"FLANNELD_IP_MASQ": "maybe"}, "FLANNELD_IP_MASQ: ip_masq"),
    (["-subnet-lease-renew-margin", "0"], {}, "subnet-lease-renew-margin"),
    (["-no-such-flag"], {}, "unknown flag"),
])
def test_bad_settings_name_their_source(argv: list[str], environ: dict[str, str],
                                        message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        settings(argv, environ)


@pytest.mark.parametrize("flag", ["-h", "-help", "--help"])
def test_help_prints_usage_on_stdout_and_exits_0(flag: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main([flag], {}) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: flanneld")
    for name in ("-etcd-endpoints", "-etcd-prefix", "-etcd-cafile", "-etcd-certfile",
                 "-etcd-keyfile", "-etcd-username", "-etcd-password", "-iface", "-public-ip",
                 "-subnet-file", "-ip-masq"):
        assert f"  {name}\n" in out


def test_a_bad_flag_exits_2_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-bogus"], {}) == 2
    assert "unknown flag '-bogus'" in capsys.readouterr().err
