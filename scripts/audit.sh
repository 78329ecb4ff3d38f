#!/usr/bin/env bash
# The README's main command: install into ./.venv, run every analysis on its audit budget, write reports/audit-*.html.
# Usage: scripts/audit.sh [diag audit options]   e.g. scripts/audit.sh --scale 8   (bigger budgets on a GPU)
# A second run reuses the finished runs in the store ($DIAG_HOME, default ~/.cache/diag) and only re-renders.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/diag audit "$@"
