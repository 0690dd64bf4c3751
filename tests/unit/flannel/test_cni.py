"""The CNI plugin's pure part: netconf defaults, subnet.env, the delegate config."""

from __future__ import annotations

import json

import pytest
from flotilla.daemons.flannel.cni import (
    CNIError,
    delegate_conf,
    parse_netconf,
    parse_subnet_env,
    version_reply,
    with_prev_result,
)

ENV = ("FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\n"
       "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n")


def test_defaults() -> None:
    conf = parse_netconf('{"name": "mynet", "type": "flannel"}')
    assert conf.subnet_file == "/run/flannel/subnet.env"
    assert conf.data_dir == "/var/lib/cni/flannel"
    assert conf.cni_version == "0.1.0"


def test_the_default_delegate_is_a_gateway_bridge_on_the_flannel_subnet() -> None:
    conf = parse_netconf('{"cniVersion": "0.3.1", "name": "mynet", "type": "flannel"}')
    delegate = delegate_conf(conf, parse_subnet_env("subnet.env", ENV))
    assert delegate == {
        "name": "mynet", "type": "bridge", "ipMasq": True, "mtu": 1450, "isGateway": True,
        "cniVersion": "0.3.1",
        "ipam": {"type": "host-local", "subnet": "10.5.72.0/24",
                 "routes": [{"dst": "10.5.0.0/16", "gw": "10.5.72.1"}]}}


def test_the_delegate_and_ipam_keep_what_the_config_sets() -> None:
    conf = parse_netconf(json.dumps({
        "cniVersion": "1.0.0", "name": "cbr0", "type": "flannel",
        "delegate": {"hairpinMode": True, "isDefaultGateway": True, "ipMasq": False,
                     "mtu": 1400, "isGateway": False, "bridge": "cni0"},
        "ipam": {"dataDir": "/tmp/x", "routes": [{"dst": "0.0.0.0/0"}]}}))
    env = parse_subnet_env("subnet.env", ENV.replace("IPMASQ=false", "IPMASQ=true"))
    delegate = delegate_conf(conf, env)
    assert (delegate["ipMasq"], delegate["mtu"], delegate["isGateway"]) == (False, 1400, False)
    assert delegate["hairpinMode"] is True and delegate["bridge"] == "cni0"
    assert delegate["ipam"] == {"dataDir": "/tmp/x", "type": "host-local",
                                "subnet": "10.5.72.0/24",
                                "routes": [{"dst": "0.0.0.0/0"},
                                           {"dst": "10.5.0.0/16", "gw": "10.5.72.1"}]}
    assert conf.delegate == {"hairpinMode": True, "isDefaultGateway": True, "ipMasq": False,
                             "mtu": 1400, "isGateway": False, "bridge": "cni0"}  # untouched


def test_flanneld_masquerading_turns_the_bridge_masquerade_off() -> None:
    conf = parse_netconf('{"name": "n", "type": "flannel"}')
    env = parse_subnet_env("s", ENV.replace("IPMASQ=false", "IPMASQ=true"))
    assert delegate_conf(conf, env)["ipMasq"] is False


def test_other_delegate_types_get_no_is_gateway() -> None:
    conf = parse_netconf('{"name": "n", "type": "flannel", "delegate": {"type": "ptp"}}')
    assert "isGateway" not in delegate_conf(conf, parse_subnet_env("s", ENV))


def test_check_and_del_carry_the_runtimes_prev_result() -> None:
    conf = parse_netconf('{"cniVersion": "0.4.0", "name": "n", "type": "flannel", '
                         '"prevResult": {"ips": []}}')
    assert with_prev_result({"type": "bridge", "cniVersion": "0.3.1"}, conf) == {
        "type": "bridge", "cniVersion": "0.4.0", "prevResult": {"ips": []}}
    assert with_prev_result({"type": "bridge"}, parse_netconf('{"name": "n"}')) == {
        "type": "bridge"}


@pytest.mark.parametrize(("text", "message"), [
    ("", "/run/flannel/subnet.env is missing FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_MTU, "
         "FLANNEL_IPMASQ"),
    (ENV.replace("FLANNEL_MTU=1450\n", ""), "/run/flannel/subnet.env is missing FLANNEL_MTU"),
    (ENV.replace("1450", "big"), "/run/flannel/subnet.env: invalid literal"),
    (ENV.replace("10.5.72.1/24", "10.5.72.1/99"), "/run/flannel/subnet.env:"),
])
def test_bad_subnet_env(text: str, message: str) -> None:
    with pytest.raises(CNIError) as caught:
        parse_subnet_env("/run/flannel/subnet.env", text)
    assert caught.value.msg.startswith(message)


@pytest.mark.parametrize("text", ["{", "[]", '{"name": "n", "delegate": "bridge"}',
                                  '{"name": "n", "ipam": []}'])
def test_bad_netconf_is_a_decoding_error(text: str) -> None:
    with pytest.raises(CNIError) as caught:
        parse_netconf(text)
    assert caught.value.code == 6 and caught.value.msg.startswith("failed to load netconf")


def test_error_and_version_json() -> None:
    assert json.loads(CNIError(999, "boom", "why").to_json("0.4.0")) == {
        "cniVersion": "0.4.0", "code": 999, "msg": "boom", "details": "why"}
    reply = json.loads(version_reply())
    assert reply["cniVersion"] == "1.0.0" and "0.3.1" in reply["supportedVersions"]
