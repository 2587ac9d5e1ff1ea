#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and integration tests against the real gateway.
#   bash scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --locked "$@"
