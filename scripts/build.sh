#!/usr/bin/env bash
# Builds the Worker bundle into build/ (wrangler's [build] command).
# UIP_SKIP_BUILD=1 reuses an existing bundle: the test suite builds once and then
# starts several `wrangler dev` instances that must not rebuild concurrently.
set -euo pipefail
source "$(dirname "$0")/tools.sh"
cd "$ROOT"
if [ "${UIP_SKIP_BUILD:-}" = "1" ] && [ -f build/index.js ]; then
  exit 0
fi
worker-build --release --no-opt >&2
