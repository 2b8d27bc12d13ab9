#!/usr/bin/env bash
# make bench: see bench.py's docstring. Extra arguments pass through, e.g. `--duration 8 --scale`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
"$here/../.venv/bin/python" "$here/bench.py" "$@"
# What key checks cost per request (with and without keys, in process and with Redis).
"$here/../.venv/bin/python" "$here/key_checks.py"
# The routing decision alone, in-process, on the multi-provider example policy.
exec "$here/../.venv/bin/python" "$here/routing_decision.py"
