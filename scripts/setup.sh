#!/usr/bin/env bash
# Installs what Rill needs on a fresh Debian/Ubuntu machine with a Rust toolchain, and fetches the
# crates. Idempotent: run it as often as you like. CI runs it before the tests (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }

if ! need cargo; then
  echo "setup: cargo not found. Install Rust with https://rustup.rs (stable, 1.86 or newer) and run this again." >&2
  exit 1
fi
if ! need cc; then
  echo "setup: installing a C compiler (build-essential) for crates that build C code" >&2
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq build-essential; else sudo apt-get update -qq && sudo apt-get install -y -qq build-essential; fi
fi
echo "setup: fetching crates" >&2
cargo fetch --locked -q 2>/dev/null || cargo fetch -q
echo "setup: ready ($(cargo --version))" >&2
