#!/usr/bin/env bash
# Serves worker.js under bare workerd and closes a socket each way: from the
# alarm and in fetch (the connection outlives its close frame by ~10 s), and
# in a message handler or from the alarm after the client sent a frame (it ends
# at once). With the object kept busy 5 s after the close, it ends 15 s later:
# the connection lasts until the idle object is evicted. Run from the project root: bash docs/repro/close-linger/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
state="$(mktemp -d)"
port=8797
setsid bash "$here/../../../scripts/bare-workerd.sh" "$here/wrangler.toml" "$port" "$state" DO ROOM=Room > "$state/log" 2>&1 &
pid=$!
trap 'kill -TERM -- -$pid 2>/dev/null || true; rm -rf "$state"' EXIT
for _ in $(seq 1 60); do curl -s -o /dev/null "http://127.0.0.1:$port/" -H 'x: y' && break; sleep 0.5; done
cd "$here/../../.."
clients=()
node "$here/client.mjs" "$port" alarm & clients+=($!)
node "$here/client.mjs" "$port" fetch & clients+=($!)
node "$here/client.mjs" "$port" busy & clients+=($!)
node "$here/client.mjs" "$port" alarm send & clients+=($!)
node "$here/client.mjs" "$port" message send & clients+=($!)
wait "${clients[@]}"
