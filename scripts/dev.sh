#!/usr/bin/env bash
# Starts the gateway locally on ws://127.0.0.1:8787 with `wrangler dev`.
# First run: installs the tools, writes .dev.vars with a random JWT_SECRET,
# and prints a subscriber token, a publisher token and an example.
set -euo pipefail
source "$(dirname "$0")/tools.sh"
cd "$ROOT"
PORT="${PORT:-8787}"

if [ ! -f .dev.vars ] || ! grep -q '^JWT_SECRET=' .dev.vars; then
  echo "JWT_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" >> .dev.vars
  log "wrote a random JWT_SECRET to .dev.vars"
fi

cargo build --quiet --bin uip-token
TOKEN_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/uip-token"
SUB_TOKEN="$("$TOKEN_BIN" --sub dev-subscriber --scope subscribe --channels '*')"
PUB_TOKEN="$("$TOKEN_BIN" --sub dev-publisher --scope publish)"

cat <<MSG

  uip-realtime dev gateway: ws://127.0.0.1:$PORT  (http://127.0.0.1:$PORT/healthz)

  Subscriber token (24 h, every channel):
    $SUB_TOKEN
  Publisher token (24 h):
    $PUB_TOKEN

  Try it:
    npx wscat -c "ws://127.0.0.1:$PORT/ws/accidents?token=$SUB_TOKEN"
    curl -s -X POST http://127.0.0.1:$PORT/v1/publish \\
      -H "Authorization: Bearer $PUB_TOKEN" -H 'content-type: application/json' \\
      -d '{"channel":"accidents","type":"accidents.new","data":{"id":"ACC_1","severity":"severe"}}'

MSG

exec wrangler dev --ip 127.0.0.1 --port "$PORT" "$@"
