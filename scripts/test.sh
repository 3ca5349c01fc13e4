#!/usr/bin/env bash
# The whole test suite: formatting, lints (host and wasm32), host unit tests, then
# integration tests against real `wrangler dev` instances the tests start.
set -euo pipefail
source "$(dirname "$0")/tools.sh"
cd "$ROOT"

log "cargo fmt --check"
cargo fmt --all -- --check
log "clippy (host)"
cargo clippy --workspace --all-targets --quiet -- -D warnings
log "clippy (wasm32)"
cargo clippy --lib --target wasm32-unknown-unknown --quiet -- -D warnings
log "building the Worker bundle"
bash scripts/build.sh
log "type-checking and building the TypeScript client"
tsc -p clients/ts
log "unit and integration tests"
# The tests start their own wrangler instances on free ports from this bundle.
UIP_SKIP_BUILD=1 cargo test --all-targets "$@"
log "TypeScript client tests (Node's test runner)"
UIP_SKIP_BUILD=1 node --test tests/client/
log "Python client: ruff, mypy --strict, tests (unittest)"
ensure_python
"$PY_ENV/bin/python" -m ruff check --config clients/python/pyproject.toml clients/python tests/python
(cd clients/python && "$PY_ENV/bin/python" -m mypy src)
(cd tests/python && UIP_SKIP_BUILD=1 PYTHONPATH="$ROOT/clients/python/src" "$PY_ENV/bin/python" -m unittest -v test_client)
log "browser tests (Debian's Chromium through playwright-core)"
ensure_chromium
UIP_SKIP_BUILD=1 node --test tests/browser/
