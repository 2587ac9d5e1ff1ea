#!/usr/bin/env bash
# Installs what building and testing x402-gate needs on a fresh Debian machine, and nothing that is
# already there. Run by scripts/run.sh and scripts/test.sh; safe to run again.
#   X402_SETUP_SKIP_TEST_TOOLS=1   skip what only the tests need (npm tools, Postgres)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_updated=""
apt_install() {
  echo "setup: installing $* with apt-get"
  if [ -z "$apt_updated" ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

command -v cargo >/dev/null 2>&1 || {
  echo "setup: cargo not found; install Rust (https://rustup.rs) and run again" >&2
  exit 1
}
# pingora's zlib-ng build needs cmake; several -sys crates need a C compiler.
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v cc >/dev/null 2>&1 || need+=(gcc)
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"

[ "${X402_SETUP_SKIP_TEST_TOOLS:-}" = "1" ] && exit 0

# Test tools from npm, pinned in tools/package-lock.json: anvil (a real EVM node), solc-js and
# the reference x402 clients (@x402/fetch with @x402/evm and @x402/svm).
command -v npm >/dev/null 2>&1 || apt_install nodejs npm
if [ ! -x tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil ] \
   || [ ! -d tools/node_modules/@x402/svm ] \
   || [ tools/package-lock.json -nt tools/node_modules/.package-lock.json ]; then
  echo "setup: installing test tools (tools/package.json) with npm"
  (cd tools && npm ci --no-audit --no-fund --loglevel=error)
fi

# The SDKs' test tools (tests/sdks.rs runs their suites against the real gateway): a Python venv
# in sdks/python/.venv with the pinned sdks/python/requirements-dev.txt (httpx, pytest), and
# sdks/typescript's npm packages, pinned in its package-lock.json (typescript, openapi-typescript).
py=sdks/python
if [ ! -x "$py/.venv/bin/python" ] || [ ! -f "$py/.venv/.installed" ] \
   || [ "$py/requirements-dev.txt" -nt "$py/.venv/.installed" ]; then
  command -v python3 >/dev/null 2>&1 || apt_install python3
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
    echo "setup: the Python SDK needs Python 3.10 or later; python3 is $(python3 --version)" >&2
    exit 1
  }
  python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
  echo "setup: installing the Python SDK's test tools ($py/requirements-dev.txt) in $py/.venv"
  rm -rf "$py/.venv"
  python3 -m venv "$py/.venv"
  "$py/.venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$py/requirements-dev.txt"
  touch "$py/.venv/.installed"
fi
# schemathesis, which tests/api_fuzz.rs runs against the management API's OpenAPI document: a
# venv of its own in tests/api_fuzz/.venv, pinned in tests/api_fuzz/requirements.txt.
fuzz=tests/api_fuzz
if [ ! -x "$fuzz/.venv/bin/schemathesis" ] || [ ! -f "$fuzz/.venv/.installed" ] \
   || [ "$fuzz/requirements.txt" -nt "$fuzz/.venv/.installed" ]; then
  python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
  echo "setup: installing schemathesis ($fuzz/requirements.txt) in $fuzz/.venv"
  rm -rf "$fuzz/.venv"
  python3 -m venv "$fuzz/.venv"
  "$fuzz/.venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$fuzz/requirements.txt"
  touch "$fuzz/.venv/.installed"
fi
ts=sdks/typescript
if [ ! -x "$ts/node_modules/.bin/tsc" ] \
   || [ "$ts/package-lock.json" -nt "$ts/node_modules/.package-lock.json" ]; then
  echo "setup: installing the TypeScript SDK's build and test tools ($ts/package.json) with npm"
  (cd "$ts" && npm ci --no-audit --no-fund --loglevel=error)
fi
# The dashboard's toolchain (Vite, TypeScript) and playwright-core, pinned in
# dashboard/package-lock.json: tests/dashboard.rs rebuilds dashboard/dist to check the committed
# build is current, and drives the browser with playwright-core. (Building the gateway needs none
# of this: the built dashboard is committed and embedded.)
if [ ! -f dashboard/node_modules/vite/bin/vite.js ] \
   || [ ! -d dashboard/node_modules/playwright-core ] \
   || [ dashboard/package-lock.json -nt dashboard/node_modules/.package-lock.json ]; then
  echo "setup: installing the dashboard's toolchain (dashboard/package.json) with npm"
  # `npm install` from the lock, not `npm ci`: vite 8 lists a Windows-only optional package
  # (napi-windows-process-start-time) that npm leaves out of the lock on Linux, and `npm ci`
  # then refuses the lock as out of sync. The lock still pins every version installed here.
  (cd dashboard && npm install --no-audit --no-fund --loglevel=error)
fi
# A real browser for the dashboard's tests: Debian's chromium (playwright-core drives it; no
# browser is downloaded by npm).
command -v chromium >/dev/null 2>&1 || apt_install chromium
# wrk, for the benchmarks' HTTP rows (benches/compare.rs runs in short mode with the tests).
command -v wrk >/dev/null 2>&1 || apt_install wrk
# nginx, for the fixed-200 baseline the 402 is held to. The benchmark starts its own, in a temp
# directory on a free port; the package's service, where the system starts one, is not used.
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || apt_install nginx-light

# Postgres for the store suite: X402_TEST_DATABASE_URL, or a local server on 127.0.0.1:5432
# with trust auth and a database `test` (started, or installed and configured, if absent).
if [ -z "${X402_TEST_DATABASE_URL:-}" ]; then
  pg_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
  if ! pg_up; then
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
      apt_install postgresql
    fi
    ver=$(ls /etc/postgresql | sort -V | tail -1)
    hba="/etc/postgresql/$ver/main/pg_hba.conf"
    if ! grep -q "x402-gate tests" "$hba"; then
      # Loopback only, for the test database on a development machine.
      printf '# x402-gate tests: trust loopback\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n' \
        | cat - "$hba" | $SUDO tee "$hba.new" >/dev/null && $SUDO mv "$hba.new" "$hba"
    fi
    echo "setup: starting PostgreSQL $ver"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main start || $SUDO pg_ctlcluster "$ver" main restart
    for _ in $(seq 1 30); do pg_up && break; sleep 0.5; done
  fi
  if command -v psql >/dev/null 2>&1 \
     && ! psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1; then
    psql -h 127.0.0.1 -U postgres -d postgres -c 'CREATE DATABASE test' >/dev/null 2>&1 || true
  fi
fi
