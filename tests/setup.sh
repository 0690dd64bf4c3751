#!/usr/bin/env bash
# Installs everything the tests and the demo cluster need, on a Debian 12 machine, as root.
# Idempotent: a second run only checks. Called by tests/run.sh and tests/cluster.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  # test machines: systemd-nspawn, debootstrap, network plumbing
  systemd-container debootstrap iproute2 iputils-ping util-linux
  # the daemons' build and run-time needs
  dbus libsystemd-dev pkg-config python3 python3-venv python3-dev gcc
  # reference implementations compared side by side
  etcd-server etcd-client ignition
  # fault injection, packaging checks, storage stages, benchmarks
  iptables rpm gdisk xfsprogs dosfstools e2fsprogs wrk
  # A/B partition attributes, compared with what the update engine writes
  cgpt
  # the bridge and host-local CNI plugins flannel's CNI plugin delegates to (/usr/lib/cni)
  containernetworking-plugins
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Debian's etcd package starts a host etcd on 2379; the tests start their own.
if systemctl is-active --quiet etcd 2>/dev/null; then systemctl stop etcd || true; fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.flotilla-installed
want=$(sha256sum pyproject.toml setup.py | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing the package and its test extras into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -U pip
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  echo "$want" > "$stamp"
fi

# The test machines' root filesystem (debootstrap, cached under .cache/rootfs).
.venv/bin/python -c 'from tests.machines import ensure_rootfs; print("setup: test root", ensure_rootfs())'
