#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs what the tests need,
# then runs lint, type checks and the test suite.
#
# As root it installs Debian's redis-server, slurm-wlm and munge if missing. As
# any other user it says what is missing and goes on: the real-Slurm tests then
# skip with a message (they need root to run their daemons anyway), unless
# WARPSTORE_REQUIRE_SLURM=1 (CI), where a missing Slurm is an error.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Python to test with: $PYTHON, else the active venv's, else the README's .venv
# (so the test line works in a new shell too), else python3 (CI: a fresh machine).
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then PY=$VIRTUAL_ENV/bin/python
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3
fi

# Debian installs the daemons (slurmctld, slurmd, munged, redis-server) in /usr/sbin,
# which is not on a normal user's PATH; the tests look them up on PATH too.
for dir in /usr/sbin /sbin; do
  case ":$PATH:" in *":$dir:"*) ;; *) PATH=$PATH:$dir ;; esac
done
export PATH

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# real Slurm for tests/test_schedulers.py (two slurmd "nodes" on this host)
command -v slurmctld >/dev/null 2>&1 || need_apt+=(slurm-wlm)
command -v munged >/dev/null 2>&1 || need_apt+=(munge)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  elif [ "${WARPSTORE_REQUIRE_SLURM:-}" = 1 ]; then
    echo "tests/run.sh: missing ${need_apt[*]} and WARPSTORE_REQUIRE_SLURM=1: install them (as root: apt-get install ${need_apt[*]})" >&2
    exit 1
  else
    echo "tests/run.sh: not installed: ${need_apt[*]} (as root: apt-get install ${need_apt[*]}); the tests that need them will skip or fail with that message" >&2
  fi
fi
if [ "$(id -u)" != 0 ]; then
  echo "tests/run.sh: not root: the real-Slurm tests skip (their daemons run as root)" >&2
fi

"$PY" -m pip install -q --disable-pip-version-check -e '.[test]'

echo "== ruff"
"$PY" -m ruff check .
echo "== mypy"
"$PY" -m mypy
echo "== pytest"
"$PY" -m pytest -q "$@"
