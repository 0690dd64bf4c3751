"""flanneld: leases this machine's subnet of the cluster network and programs the overlay.

Read top-down: ``config`` (the network config JSON), ``lease`` (subnet allocation, lease
keys and JSON, renewal timing, ``subnet.env``), ``plan`` (the data-plane diff) are pure;
``store`` (leases in etcd v2) and ``netlink`` (the VXLAN device, routes, iptables) are
the shells; ``main`` wires them into the daemon.
"""

VERSION = "0.10.0+flotilla"
