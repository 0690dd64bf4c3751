#!/bin/sh
# Byte-compile the bundled Python tree, create the system users, and let a running
# systemd and dbus-daemon see the new units and bus policy.
set -e
python3 -m compileall -q /usr/lib/flotilla/python >/dev/null 2>&1 || true
# The kvd user first: the unit runs as it and the D-Bus policy names it.
if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers /usr/lib/sysusers.d/flotilla.conf >/dev/null 2>&1 || true
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
if [ -d /run/dbus ] && command -v dbus-send >/dev/null 2>&1; then
    dbus-send --system --type=method_call --dest=org.freedesktop.DBus / \
        org.freedesktop.DBus.ReloadConfig >/dev/null 2>&1 || true
fi
exit 0
