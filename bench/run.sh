#!/usr/bin/env bash
# make bench: see bench.py's docstring. Extra arguments pass through, e.g. `--duration 8 --scale`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec "$here/../.venv/bin/python" "$here/bench.py" "$@"
