#!/usr/bin/env bash
# Every test, against the real PostgreSQL and NATS (deploy/services.sh brings them up).
set -euo pipefail
cd "$(dirname "$0")/.."
export DATABASE_URL=${DATABASE_URL:-postgres://kubecensus@127.0.0.1:5432/kubecensus}
export NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
# kubectl, a python3 with venv, PostgreSQL's and NATS' binaries: installed where missing, and
# KUBECTL and PYTHON exported for the tests.
source deploy/test-deps.sh
# The runner: cargo-nextest runs tests of every binary side by side, each in its own process
# (.config/nextest.toml); `cargo test` would run the test binaries (38) one after another. Built
# from crates.io where missing (a few minutes, once). The workspace has no doc tests.
NEXTEST_VERSION=0.9.143
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test: installing cargo-nextest $NEXTEST_VERSION from crates.io" >&2
  cargo install --locked --quiet cargo-nextest --version "$NEXTEST_VERSION"
fi
# The end-to-end tests run the real scheduler, worker and fleet-sim binaries.
cargo build --workspace --bins
cargo nextest run --workspace "$@"
