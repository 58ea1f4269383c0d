#!/usr/bin/env bash
# Runs LedgerFlow's whole test suite against real services: starts (installing if needed)
# RabbitMQ and a MongoDB replica set on loopback, then runs every test in the workspace.
# Uses cargo-nextest when installed (one process per test, one summary line), else cargo test.
# Extra arguments go to the runner (e.g. scripts/test.sh -p ledgerflow-tests --test pipeline).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/services.sh up
# Process-level tests run the real binary.
cargo build --locked --bin ledgerflow
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --locked --no-fail-fast "$@"
fi
exec cargo test --workspace --locked --no-fail-fast "$@"
