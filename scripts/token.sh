#!/usr/bin/env bash
# Prints a token signed with the dev secret: `npm run token -- --scope publish`.
set -euo pipefail
source "$(dirname "$0")/tools.sh"
cd "$ROOT"
exec cargo run --quiet --bin uip -- token "$@"
