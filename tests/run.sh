#!/usr/bin/env bash
# The test command: installs what it needs, then runs every test tier.
#   tests/run.sh                 all tiers (unit, process, system)
#   tests/run.sh unit            one tier (unit | process | system)
#   tests/run.sh -- ARGS...      extra pytest arguments, e.g. -- -k raft
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh

tiers=(unit process system)
if [ $# -gt 0 ] && [ "$1" != "--" ]; then tiers=("$1"); shift; fi
[ "${1:-}" = "--" ] && shift

marker=""
for tier in "${tiers[@]}"; do marker="${marker:+$marker or }$tier"; done
start=$(date +%s)
set +e
.venv/bin/pytest -m "$marker" -p no:cacheprovider --timeout=900 "$@"
status=$?
set -e
echo "test run took $(( $(date +%s) - start ))s"
# pytest exits 5 when nothing was collected: a selection that ran no test is a failure here.
if [ "$status" -eq 5 ]; then
  echo "no tests ran for: $marker" >&2
  exit 1
fi
exit "$status"
