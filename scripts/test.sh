#!/usr/bin/env bash
# Runs every test on a fresh machine: installs what the tests need (scripts/setup.sh: compilers,
# torch in .venv, the MNIST digits and model), then the whole workspace's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# `infer` opens librill_torch.so at run time; `cargo test` alone builds only its test harness.
cargo build -p rill-torch
cargo test --workspace "$@"
