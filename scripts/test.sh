#!/usr/bin/env bash
# README command 2: install what is needed, then run every check: ruff, mypy --strict (the
# library, its tests, benchmarks and scripts), and pytest with the unit tests and the lab
# tests (run as root in the VM on the real kernel; --lab require makes a lab that cannot
# run a failure, not a skip, and --no-skips fails the run if any test at all was skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
start=$(date +%s)
echo "== ruff"
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
echo "== mypy --strict (src, tests, bench, scripts: pyproject's [tool.mypy] files)"
.venv/bin/mypy
echo "== pytest (unit + lab)"
status=0
.venv/bin/python -m pytest --lab require --no-skips -m "not slow and not soak and not pending" "$@" || status=$?
echo "test.sh: finished in $(( $(date +%s) - start )) s with status $status"
exit $status
