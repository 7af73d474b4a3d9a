#!/usr/bin/env bash
# Every test, against the real PostgreSQL and NATS (deploy/services.sh brings them up).
set -euo pipefail
cd "$(dirname "$0")/.."
export DATABASE_URL=${DATABASE_URL:-postgres://kubecensus@127.0.0.1:5432/kubecensus}
export NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
# kubectl, a python3 with venv, PostgreSQL's and NATS' binaries: installed where missing, and
# KUBECTL and PYTHON exported for the tests.
source deploy/test-deps.sh
# The end-to-end tests run the real scheduler, worker and fleet-sim binaries.
cargo build --workspace --bins
cargo test --workspace --no-fail-fast
