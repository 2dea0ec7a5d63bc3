#!/usr/bin/env bash
# Benchmarks on the test host with the real components (not part of scripts/test.sh):
# webhook ingest against the platform floor, operation creation, sweep tick cost.
# Usage: scripts/bench.sh [--webhooks N] [--concurrency 1,16,64] [--creates N]
#                         [--pending 1000,10000] [--due 100] [--only ingest,create,sweep,scale]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --target wasm32-wasip2 --release -p operations-api -p webhook-intake -p poll-sweep
cargo run --release -p e2e --bin bench -- "$@"
