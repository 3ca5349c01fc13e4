#!/usr/bin/env bash
# The `uip` command line, built on first use: `npm run uip -- --help`.
set -euo pipefail
source "$(dirname "$0")/tools.sh"
cd "$ROOT"
exec cargo run --quiet --bin uip -- "$@"
