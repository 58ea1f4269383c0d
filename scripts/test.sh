#!/usr/bin/env bash
# Runs LedgerFlow's whole test suite against real services: starts (installing if needed)
# RabbitMQ and a MongoDB replica set on loopback, then runs every test in the workspace.
# Uses cargo-nextest when installed (one process per test, one summary line), else cargo test.
# Extra arguments go to the runner (e.g. scripts/test.sh -p ledgerflow-tests --test e2e).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/services.sh up
scripts/services.sh sweep || echo "test.sh: sweeping old test databases failed; going on" >&2
# Process-level tests run the real binary. Built with every test target in one go, so that
# dependencies are compiled once, with one feature set: the binary alone, then the workspace's
# tests, then the fault tests' package alone resolved features three ways and compiled tokio,
# mongodb, lapin and axum again each time (about 8 of a cold run's 25 minutes on 2 slow cores).
cargo build --workspace --all-targets --locked
# Two phases: everything else in parallel, then the fault tests (tests/faults/) one at a
# time, since they restart RabbitMQ and mongod under everyone's feet. Both always run; the
# script fails if either does.
status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast -E 'not binary(faults)' "$@" || status=$?
  cargo nextest run --workspace --locked --no-fail-fast -E 'binary(faults)' --test-threads 1 || status=$?
else
  cargo test --workspace --locked --no-fail-fast --exclude ledgerflow-tests "$@" || status=$?
  cargo test -p ledgerflow-tests --locked --no-fail-fast --test e2e --test deploy "$@" || status=$?
  cargo test -p ledgerflow-tests --locked --no-fail-fast --test faults -- --test-threads 1 || status=$?
fi
exit "$status"
