#!/usr/bin/env bash
# The benchmark: builds the release server and load generator, then runs
# `loadtest bench` (every scenario for a fixed time, activation, time to ready, memory)
# and writes BENCHMARKS.md. Options go to `loadtest bench`, e.g. --seconds 5.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins
exec target/release/loadtest bench "$@"
