#!/bin/sh
# Remove byte-compiled files the postinstall step created; the package owns none of them.
set -e
find /usr/lib/flotilla/python -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true
exit 0
