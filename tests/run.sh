#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs what the tests need,
# then runs lint, type checks and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# real Slurm for tests/test_schedulers.py (two slurmd "nodes" on this host)
command -v slurmctld >/dev/null 2>&1 || need_apt+=(slurm-wlm)
command -v munged >/dev/null 2>&1 || need_apt+=(munge)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else
    echo "tests/run.sh: please install: ${need_apt[*]} (Debian/Ubuntu: apt-get install ${need_apt[*]})" >&2
    exit 1
  fi
fi

"$PY" -m pip install -q --disable-pip-version-check -e '.[test]'

echo "== ruff"
"$PY" -m ruff check .
echo "== mypy"
"$PY" -m mypy
echo "== pytest"
"$PY" -m pytest -q "$@"
