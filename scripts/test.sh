#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and integration tests against the real gateway.
#   bash scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --locked "$@"
# The side-by-side benchmark in short mode (a little of each row, in this debug build): proves it
# still runs end to end. It asserts nothing on timing; its figures come from `cargo bench`.
if [ "$#" -eq 0 ]; then
  X402_BENCH_SHORT=1 cargo test --locked --bench compare
fi
