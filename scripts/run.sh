#!/usr/bin/env bash
# Starts the gateway on the embedded SQLite with a config from config/ (default: config/local.toml).
#   bash scripts/run.sh [CONFIG]
set -euo pipefail
cd "$(dirname "$0")/.."
X402_SETUP_SKIP_TEST_TOOLS=1 bash scripts/setup.sh
CONFIG="${1:-config/local.toml}"
exec cargo run --release --locked -- --config "$CONFIG"
