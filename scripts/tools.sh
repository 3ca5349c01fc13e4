# Sourced by the other scripts: makes sure every build tool is present, installing
# what is missing from the package registries only, and puts them on PATH.
#
# Installs are kept per user (UIP_CACHE, default ~/.cache/uip-realtime) keyed by
# version, so a fresh clone on the same machine reuses them, and are linked into
# the git-ignored project folder .tools/bin.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
UIP_CACHE="${UIP_CACHE:-$HOME/.cache/uip-realtime}"
TOOLS_BIN="$ROOT/.tools/bin"
WORKER_BUILD_VERSION="0.8.7"
mkdir -p "$TOOLS_BIN" "$UIP_CACHE/tools"

log() { printf '[uip] %s\n' "$*" >&2; }

# cargo_tool CRATE VERSION BIN: installs CRATE@VERSION once, links BIN.
cargo_tool() {
  local crate="$1" version="$2" bin="$3"
  local root="$UIP_CACHE/tools/$crate-$version"
  if [ ! -x "$root/bin/$bin" ]; then
    log "installing $crate $version from crates.io (one-time, several minutes)"
    # wasm-bindgen-cli's lock file pins crates the registry may lack: no --locked.
    cargo install "$crate" --version "=$version" --root "$root.partial" --force >&2
    rm -rf "$root" && mv "$root.partial" "$root"
  fi
  ln -sf "$root/bin/$bin" "$TOOLS_BIN/$bin"
}

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  log "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown >&2
fi

WASM_BINDGEN_VERSION="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$ROOT/Cargo.lock")"
if [ -z "$WASM_BINDGEN_VERSION" ]; then
  log "cannot read the wasm-bindgen version from Cargo.lock"
  exit 1
fi
cargo_tool worker-build "$WORKER_BUILD_VERSION" worker-build
cargo_tool wasm-bindgen-cli "$WASM_BINDGEN_VERSION" wasm-bindgen

if [ ! -x "$ROOT/node_modules/.bin/wrangler" ] || [ "$ROOT/package-lock.json" -nt "$ROOT/node_modules/.package-lock.json" ]; then
  log "installing npm packages (wrangler, workerd, esbuild)"
  (cd "$ROOT" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi

# ensure_chromium: Debian's Chromium for the browser tests (nothing is
# downloaded by the test tools themselves); installed with apt when missing.
ensure_chromium() {
  if [ -x /usr/bin/chromium ]; then
    return
  fi
  log "installing Debian's chromium (one-time)"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >&2
}

# ensure_python: a virtualenv with the Python client's dependency and its
# linters, kept per user by requirements, reused by every clone.
PY_REQUIREMENTS="websockets==15.0.1 ruff==0.8.6 mypy==1.13.0"
ensure_python() {
  local key
  key="$(printf '%s' "$PY_REQUIREMENTS" | sha1sum | cut -c1-12)"
  PY_ENV="$UIP_CACHE/python-$key"
  if [ ! -x "$PY_ENV/bin/python" ]; then
    log "creating the Python environment for the client tests (one-time)"
    rm -rf "$PY_ENV.partial"
    python3 -m venv "$PY_ENV.partial" >&2
    # shellcheck disable=SC2086
    "$PY_ENV.partial/bin/pip" install -q $PY_REQUIREMENTS >&2
    mv "$PY_ENV.partial" "$PY_ENV"
  fi
  export PY_ENV
}

export PATH="$TOOLS_BIN:$ROOT/node_modules/.bin:$PATH"
# worker-build would download these from GitHub; point it at the local ones.
export WASM_BINDGEN_BIN="$TOOLS_BIN/wasm-bindgen"
export ESBUILD_BIN="$ROOT/node_modules/.bin/esbuild"
export WRANGLER_SEND_METRICS=false
# Locally a placeholder `Request.cf` object is fine; fetching the real one
# prints a stack trace on an offline machine.
export CLOUDFLARE_CF_FETCH_ENABLED=false
# Every script (dev, test, bench) and every clone shares one build cache.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$UIP_CACHE/target}"
