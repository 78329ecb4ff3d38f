"""Import rollouts sampled elsewhere (vLLM or any engine) from JSONL, all or nothing.

Schema, one JSON object per line:

    {"problem_id": str, "mode": "tool" | "text", "sample": int >= 0, "response": str, "correct": bool,
     optional: "answer": int | null, "generated_tokens": int, "tool_calls": int, "tool_input_tokens": int,
     "tool_output_tokens": int, "first_call_token": int | null, "exec_statuses": [str], "finish": str,
     "family": str, "level": int}

Every line is validated before anything is returned; the first bad line raises ``DiagError`` naming its file
and line number. Each problem needs rollouts in both modes, and (problem, mode, sample) must be unique.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from diag.analysis import read_json_lines
from diag.errors import DiagError
from diag.tir.rollouts import MODES, Rollout
from diag.tir.sandbox import STATUSES

_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "problem_id": str, "mode": str, "sample": int, "response": str, "correct": bool,
}
_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "answer": (int, type(None)), "generated_tokens": int, "tool_calls": int, "tool_input_tokens": int,
    "tool_output_tokens": int, "first_call_token": (int, type(None)), "exec_statuses": list, "finish": str,
    "family": str, "level": int,
}


def _check_type(where: str, key: str, value: Any, expected: type | tuple[type, ...]) -> None:
    types = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool) and bool not in types:  # JSON true is not an integer count
        ok = False
    else:
        ok = isinstance(value, types)
    if not ok:
        names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        raise DiagError(f"{where}: field {key!r} must be {names}, got {json.dumps(value)}")


def parse_record(where: str, obj: dict[str, Any]) -> tuple[Rollout, dict[str, Any]]:
    """One validated rollout and its problem metadata (family, level) from one JSONL object."""
    missing = [k for k in _REQUIRED if k not in obj]
    if missing:
        raise DiagError(f"{where}: missing field(s) {', '.join(missing)}")
    unknown = sorted(set(obj) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise DiagError(f"{where}: unknown field(s) {', '.join(unknown)}")
    for key, value in obj.items():
        _check_type(where, key, value, {**_REQUIRED, **_OPTIONAL}[key])
    if obj["mode"] not in MODES:
        raise DiagError(f"{where}: mode must be one of {', '.join(MODES)}, got {obj['mode']!r}")
    if obj["sample"] < 0 or not obj["problem_id"]:
        raise DiagError(f"{where}: sample must be >= 0 and problem_id non-empty")
    for key in ("generated_tokens", "tool_calls", "tool_input_tokens", "tool_output_tokens"):
        if obj.get(key, 0) < 0:
            raise DiagError(f"{where}: {key} must be >= 0")
    bad = [s for s in obj.get("exec_statuses", []) if s not in STATUSES]
    if bad:
        raise DiagError(f"{where}: unknown exec status {bad[0]!r}; known: {', '.join(STATUSES)}")
    meta = {"family": obj.pop("family", "imported"), "level": obj.pop("level", 0)}
    return Rollout(**obj), meta


def read_rollouts(path: Path) -> tuple[list[Rollout], dict[str, dict[str, Any]]]:
    """All rollouts of a JSONL file and per-problem metadata, or a ``DiagError`` naming the first bad line."""
    rollouts: list[Rollout] = []
    meta: dict[str, dict[str, Any]] = {}
    first_line: dict[str, int] = {}
    seen: dict[tuple[str, str, int], int] = {}
    for lineno, obj in read_json_lines(path, "rollout file"):
        rollout, problem_meta = parse_record(f"{path}:{lineno}", obj)
        key = (rollout.problem_id, rollout.mode, rollout.sample)
        if key in seen:
            raise DiagError(f"{path}:{lineno}: duplicate rollout {key} (first on line {seen[key]})")
        seen[key] = lineno
        first_line.setdefault(rollout.problem_id, lineno)
        meta.setdefault(rollout.problem_id, problem_meta)
        rollouts.append(rollout)
    modes: dict[str, set[str]] = {}
    for r in rollouts:
        modes.setdefault(r.problem_id, set()).add(r.mode)
    for problem_id, present in modes.items():
        if present != set(MODES):
            raise DiagError(f"{path}:{first_line[problem_id]}: problem {problem_id!r} has rollouts for mode "
                            f"{', '.join(sorted(present))} only; both tool and text are needed")
    return rollouts, meta
