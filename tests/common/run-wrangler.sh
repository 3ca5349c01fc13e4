#!/usr/bin/env bash
# Runs `wrangler dev` for a test process and takes it (and workerd) down when that
# process exits, since a Rust test binary never drops its statics.
# Usage: run-wrangler.sh PARENT_PID wrangler-args...
set -u
parent="$1"; shift
wrangler dev "$@" &
child=$!
trap 'kill -TERM -- -$$ 2>/dev/null; exit 0' TERM INT
while kill -0 "$parent" 2>/dev/null && kill -0 "$child" 2>/dev/null; do
  sleep 1
done
kill -TERM -- -$$ 2>/dev/null
