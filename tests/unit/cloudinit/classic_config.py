"""The cloud-config of CoreOS's 2014 talks and docs, shared by the tests of every tier.

``CLASSIC`` is it unchanged; ``classic(discovery)`` is the same with a discovery URL of
the test's own (the system test runs a real discovery service).
"""

from __future__ import annotations

EXAMPLE_DISCOVERY = "https://discovery.etcd.io/5ea3b1e1b3ba4a4b8e0c0f5d0a3f5e2c"

_TEMPLATE = """\
#cloud-config

users:
  - name: elroy
    passwd: $6$5s2u6/jR$un0AvWnqilcgaNB3Mkxd5yYv6mTlWfOoCYHZmfi3LDKVltj
    groups:
      - sudo
      - docker
    coreos-ssh-import-github: elroy

coreos:
  etcd:
    # generate a new token for each unique cluster from https://discovery.etcd.io/new
    discovery: {discovery}
    addr: $public_ipv4:4001
    peer-addr: $private_ipv4:7001
  units:
    - name: etcd.service
      command: start
    - name: fleet.service
      command: start
"""


def classic(discovery: str = EXAMPLE_DISCOVERY) -> str:
    return _TEMPLATE.format(discovery=discovery)


CLASSIC = classic()
