#!/usr/bin/env bash
# Self-test of the Python interop peer (asyncua client against asyncua server through ua_peer.py), no Rust involved.
# Uses $CERTVAULT_PYTHON, else the venv scripts/test builds (.venv/interop). Bounded: 120 s at most.
# Arguments go to selftest.py: -j N (client processes at a time, default 4), --full (refusals on every endpoint).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${CERTVAULT_PYTHON:-$here/../../.venv/interop/bin/python}"
if [ ! -x "$python" ]; then
  echo "selftest.sh: no interop Python at $python (run scripts/test once, or set CERTVAULT_PYTHON)" >&2
  exit 2
fi
exec timeout --kill-after=5 120 "$python" "$here/selftest.py" "$@"
