#!/usr/bin/env bash
# Sets up and runs the whole of LedgerFlow on this machine: starts (installing if needed)
# RabbitMQ and a MongoDB replica set on loopback, builds the release binary, and runs a
# gateway with two workers in one process on http://127.0.0.1:8080, with a SYSTEM user.
# Stop it with Ctrl-C (it drains in-flight transfers first).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/services.sh up
cargo build --release --locked --bin ledgerflow
export LEDGERFLOW_SYSTEM_EMAIL="${LEDGERFLOW_SYSTEM_EMAIL:-system@ledgerflow.local}"
export LEDGERFLOW_SYSTEM_PASSWORD="${LEDGERFLOW_SYSTEM_PASSWORD:-change-me-system-password}"
echo "SYSTEM user: $LEDGERFLOW_SYSTEM_EMAIL / $LEDGERFLOW_SYSTEM_PASSWORD"
exec target/release/ledgerflow up --dev --workers "${LEDGERFLOW_WORKERS:-2}" "$@"
