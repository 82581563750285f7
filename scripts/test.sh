#!/usr/bin/env bash
# Runs every test on a fresh machine: installs what the tests need (scripts/setup.sh: compilers,
# torch in .venv, the MNIST digits and model), then the whole workspace's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --workspace "$@"
