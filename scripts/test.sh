#!/usr/bin/env bash
# Install the workbench with its test extra into .venv and run the whole test suite (slow tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test,scale
.venv/bin/python -m pytest -q "$@"
