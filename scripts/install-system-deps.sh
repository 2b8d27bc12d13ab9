#!/usr/bin/env bash
# Debian packages the tests and the benchmark run for real: redis-server (store tests),
# prometheus (scrape test), chromium (rankings page test), nginx + wrk (benchmark),
# node + npm (the openai npm package as a caller, tests/js; it wants Node 20 or later).
# Idempotent: installs only what is missing. Needs root (CI and dev machines run as root).
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v prometheus >/dev/null || need+=(prometheus)
command -v chromium >/dev/null || need+=(chromium)
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
