#!/usr/bin/env bash
# The run command: boots three test machines and shows what runs on them.
#   tests/cluster.sh [--count N] [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
exec .venv/bin/python -m tests.machines "$@"
