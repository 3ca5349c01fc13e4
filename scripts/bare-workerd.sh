#!/usr/bin/env bash
# Serves a worker under bare `workerd` (the binary wrangler ships), without
# `wrangler dev`'s proxy, dev registry and inspector: the runtime users deploy
# to, for benchmarks. It bundles with `wrangler deploy --dry-run`, writes a
# workerd config with on-disk SQLite Durable Object storage, and runs it in the
# foreground (callers background it).
#
# Usage: bare-workerd.sh WRANGLER_TOML PORT STATE_DIR [DO BINDING=Class]... [VAR NAME=value]...
#   e.g. bare-workerd.sh wrangler.toml 8795 /tmp/gw DO CHANNEL_ROOM=ChannelRoom DO HUB=Hub DO DIRECTORY=Directory VAR JWT_SECRET=s
set -euo pipefail
source "$(dirname "$0")/tools.sh"
cd "$ROOT"
toml="$1" port="$2" state="$3"
shift 3
mkdir -p "$state/dist" "$state/storage"
UIP_SKIP_BUILD=1 wrangler deploy --dry-run -c "$toml" --outdir "$state/dist" > "$state/bundle.log" 2>&1
main=$(cd "$state/dist" && ls ./*.js | head -1 | sed 's#^\./##')
modules="    (name = \"$main\", esModule = embed \"dist/$main\"),"
for wasm in $(cd "$state/dist" && ls ./*.wasm 2>/dev/null | sed 's#^\./##'); do
  modules+=$'\n'"    (name = \"$wasm\", wasm = embed \"dist/$wasm\"),"
done
namespaces="" bindings=""
while [ $# -gt 0 ]; do
  kind="$1" pair="$2"
  shift 2
  name="${pair%%=*}" value="${pair#*=}"
  case "$kind" in
    DO)
      namespaces+="    (className = \"$value\", uniqueKey = \"bare-$value\", enableSql = true),"$'\n'
      bindings+="    (name = \"$name\", durableObjectNamespace = \"$value\"),"$'\n'
      ;;
    VAR)
      bindings+="    (name = \"$name\", text = \"$value\"),"$'\n'
      ;;
    *) echo "unknown kind $kind" >&2; exit 2 ;;
  esac
done
compat=$(awk -F'"' '/^compatibility_date/ { print $2; exit }' "$toml")
cat > "$state/config.capnp" <<EOF
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "main", worker = .worker),
    (name = "storage", disk = (path = "$state/storage", writable = true)),
  ],
  sockets = [ (name = "http", address = "127.0.0.1:$port", http = (), service = "main") ],
);

const worker :Workerd.Worker = (
  modules = [
$modules
  ],
  compatibilityDate = "$compat",
  durableObjectNamespaces = [
$namespaces  ],
  durableObjectStorage = (localDisk = "storage"),
  bindings = [
$bindings  ],
);
EOF
exec "$ROOT/node_modules/@cloudflare/workerd-linux-64/bin/workerd" serve --experimental "$state/config.capnp"
