#!/usr/bin/env bash
# Debian packages the tests and the benchmark run for real: redis-server (store tests),
# prometheus + promtool (scrape test, rule checks), chromium (rankings page test), nginx + wrk
# (benchmark), valgrind (`bench/agent_edge.py --instructions`), node + npm (the openai npm
# package as a caller, tests/js; it wants Node 20 or later), and python3-venv where the
# python3 that `make install` uses cannot make a venv.
# Idempotent: installs only what is missing. Needs root (CI and dev machines run as root).
# tests/test_ci.py checks that every binary a test requires is named here.
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v prometheus >/dev/null || need+=(prometheus)
command -v promtool >/dev/null || need+=(prometheus)
command -v chromium >/dev/null || need+=(chromium)
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v valgrind >/dev/null || need+=(valgrind)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
# Debian's python3 ships venv's ensurepip separately; pyenv's and python.org's include it.
if ! "${PY:-python3}" -c 'import ensurepip' 2>/dev/null; then
  need+=(python3-venv)
fi
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
