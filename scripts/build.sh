#!/usr/bin/env bash
# Builds the Worker bundle into build/ (wrangler's [build] command), unless it
# is newer than every source file: `npm run dev` builds once before wrangler
# starts, so wrangler's first build is a no-op, and later edits rebuild.
# UIP_SKIP_BUILD=1 reuses an existing bundle as it is: the test suite builds
# once and then starts several `wrangler dev` instances that must not rebuild.
set -euo pipefail
source "$(dirname "$0")/tools.sh"
cd "$ROOT"
# The dashboard's copy of the TypeScript client.
if [ ! -f public/client/index.js ] || [ -n "$(find clients/ts/src -newer public/client/index.js -print -quit)" ]; then
  tsc -p clients/ts --outDir public/client --declaration false >&2
fi
if [ -f build/index.js ]; then
  if [ "${UIP_SKIP_BUILD:-}" = "1" ]; then
    exit 0
  fi
  if [ -z "$(find src durable_objects Cargo.toml Cargo.lock wrangler.toml -newer build/index.js -print -quit)" ]; then
    exit 0
  fi
fi
worker-build --release --no-opt >&2
