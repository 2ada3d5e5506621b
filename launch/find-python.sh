# Sourced by warpstore-launch and warpstore-run: which Python runs warpstore.
#
# A batch job's shell has usually not activated the user's environment
# (`#!/bin/bash -l` even resets PATH from /etc/profile), so `python3` from PATH
# is often one without warpstore. In order:
#   1. $WARPSTORE_PYTHON: an absolute interpreter path; the job scripts that
#      `warpstore render` writes export the one that rendered them, and
#      `warpstore launch` exports its own to everything it starts;
#   2. python3 beside the wrapper (the wrapper installed in a venv's bin/);
#   3. the active venv's or conda env's python3 ($VIRTUAL_ENV, $CONDA_PREFIX):
#      a process manager may put its own directory first on PATH (pyenv's
#      shims do), so PATH alone can pick another Python;
#   4. python3 on PATH.
# The caller then runs "$WARPSTORE_PY" and checks that it can import warpstore.
_ws_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ -n "${WARPSTORE_PYTHON:-}" ]; then
  WARPSTORE_PY=$WARPSTORE_PYTHON
  if [ ! -x "$WARPSTORE_PY" ]; then
    echo "$(basename "$0"): WARPSTORE_PYTHON=$WARPSTORE_PY is not an executable; set it to the python of the environment that has warpstore (e.g. /path/to/venv/bin/python)" >&2
    exit 127
  fi
elif [ -x "$_ws_here/python3" ]; then
  WARPSTORE_PY=$_ws_here/python3
elif [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python3" ]; then
  WARPSTORE_PY=$VIRTUAL_ENV/bin/python3
elif [ -n "${CONDA_PREFIX:-}" ] && [ -x "$CONDA_PREFIX/bin/python3" ]; then
  WARPSTORE_PY=$CONDA_PREFIX/bin/python3
elif command -v python3 >/dev/null 2>&1; then
  WARPSTORE_PY=$(command -v python3)
else
  echo "$(basename "$0"): no python3 on PATH; export WARPSTORE_PYTHON=/path/to/venv/bin/python (the environment that has warpstore)" >&2
  exit 127
fi
# What the Python prints when it cannot import warpstore (one line, with the fix).
WARPSTORE_NO_MODULE="cannot import warpstore with this Python; export WARPSTORE_PYTHON=/path/to/venv/bin/python (the environment where you ran pip install warpstore), or activate that environment in the job script"
export WARPSTORE_NO_MODULE
