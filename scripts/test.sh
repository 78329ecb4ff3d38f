#!/usr/bin/env bash
# Install the workbench with its test extra into .venv and run the whole test suite (slow tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test,scale
.venv/bin/python -m pytest -q "$@"
# The declared transformers floor (pyproject: >=5.17) runs the model-touching tests too: 5.17.0 and the
# huggingface_hub it needs (<2) go to .floor/, ahead of the venv on PYTHONPATH; the venv is not changed.
[ -d .floor/transformers-5.17.0.dist-info ] || .venv/bin/python -m pip install -q --no-deps --target .floor \
  "transformers==5.17.0" "huggingface_hub>=1.5,<2"
PYTHONPATH=.floor .venv/bin/python -m pytest -q -m "not slow" tests/test_families.py tests/tir/test_tir_rollouts.py \
  tests/credit/test_credit_scorer.py
