#!/usr/bin/env bash
# Starts the gateway locally on ws://127.0.0.1:8787 with `wrangler dev`.
# First run: installs the tools, writes .dev.vars with a random JWT_SECRET,
# and prints tokens and examples that work with what the project installs.
#   npm run dev                  the gateway
#   npm run dev -- --simulate    the gateway and the traffic simulator feeding it
set -euo pipefail
source "$(dirname "$0")/tools.sh"
cd "$ROOT"
PORT="${PORT:-8787}"
SIMULATE=0
ARGS=()
for a in "$@"; do
  if [ "$a" = "--simulate" ]; then SIMULATE=1; else ARGS+=("$a"); fi
done

if [ ! -f .dev.vars ] || ! grep -q '^JWT_SECRET=' .dev.vars; then
  echo "JWT_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" >> .dev.vars
  log "wrote a random JWT_SECRET to .dev.vars"
fi

# The Worker bundle is built here, once; wrangler's own [build] step then
# finds it current and does not build it again (edits later do).
bash scripts/build.sh
cargo build --quiet --bin uip
UIP="$CARGO_TARGET_DIR/debug/uip"
SUB_TOKEN="$("$UIP" token --sub dev-subscriber --scope subscribe --channels '*')"
PUB_TOKEN="$("$UIP" token --sub dev-publisher --scope publish)"

cat <<MSG

  uip-realtime dev gateway: ws://127.0.0.1:$PORT  (http://127.0.0.1:$PORT/healthz)

  Live dashboard (start with --simulate to see it move):
    http://127.0.0.1:$PORT/?token=$SUB_TOKEN

  Subscriber token (24 h, every channel):
    $SUB_TOKEN
  Publisher token (24 h):
    $PUB_TOKEN

  Try it (in another terminal; \`npm run uip -- --help\` lists every command):
    npm run uip -- subscribe --channel accidents
    npm run uip -- publish --channel accidents --type accidents.new --data '{"id":"ACC_1","severity":"severe"}'
    npm run uip -- simulate --rate 20 --duration 60
    npm run uip -- stats

MSG

if [ "$SIMULATE" = 1 ]; then
  (
    for _ in $(seq 1 120); do
      curl -sf "http://127.0.0.1:$PORT/healthz" > /dev/null 2>&1 && break
      sleep 1
    done
    "$UIP" simulate --url "http://127.0.0.1:$PORT" --rate 10 --duration 3600
  ) &
fi

exec wrangler dev --ip 127.0.0.1 --port "$PORT" "${ARGS[@]}"
