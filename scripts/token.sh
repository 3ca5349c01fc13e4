#!/usr/bin/env bash
# Prints a token signed with the dev secret: `npm run token -- --scope publish`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --quiet --bin uip-token -- "$@"
