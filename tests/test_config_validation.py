"""Every field of every registered analysis Config refuses bad values with one line, before any run exists.

The invalid values are derived from each field's type hint and its declared ``Check`` (``diag.contract``), so a
new analysis or field is swept without editing this file: wrong types, NaN and infinities, values past the
stated bounds, empty text and lists, and directories, binary files and missing paths where a file is expected.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diag.config_checks import Check, config_from_dict
from diag.errors import DiagError
from diag.files import read_json_lines
from diag.registry import ANALYSES, get


@dataclasses.dataclass(frozen=True)
class BadPaths:
    directory: str
    binary: str
    missing: str


@pytest.fixture(scope="module")
def bad_paths(tmp_path_factory: pytest.TempPathFactory) -> BadPaths:
    root = tmp_path_factory.mktemp("bad-inputs")
    (root / "weights.bin").write_bytes(bytes(range(256)) * 4)  # NUL bytes and invalid UTF-8
    return BadPaths(str(root), str(root / "weights.bin"), str(root / "nowhere.jsonl"))


def _fields() -> list[tuple[str, dataclasses.Field, Any]]:
    found = []
    for analysis in sorted(ANALYSES):
        config = get(analysis).config
        hints = typing.get_type_hints(config)
        found += [(analysis, f, hints[f.name]) for f in dataclasses.fields(config)]
    return found


FIELDS = _fields()


def _check(field: dataclasses.Field) -> Check:
    return field.metadata.get("check", Check())


def _without_none(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        assert len(args) == 1, f"unsupported union {hint}"
        return args[0], True
    return hint, False


def examples(hint: Any, check: Check, paths: BadPaths) -> list[Any]:
    """Representative invalid values for a field (each must be refused)."""
    inner, optional = _without_none(hint)
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    values: list[Any]
    if origin is typing.Literal:
        values = ["not-a-choice", 3, None]
    elif origin in (tuple, list):
        values = ["x", 3, {"a": 1}, None, *([[]] if check.min_len > 0 else [])]
        values += [[item] for item in examples(args[0], check, paths)[:3]]
        if check.max_len is not None:
            values.append([_valid_item(args[0], check)] * (check.max_len + 1))
    elif inner is bool:
        values = ["yes", 1, 0.5, None]
    elif inner in (int, float):
        values = ["many", True, None, [1]] + (["1.5", 1.5] if inner is int else [math.nan, math.inf, -math.inf])
        if check.low is not None:
            values.append(check.low - 1)
        if check.above is not None:
            values.append(check.above)
        if check.high is not None:
            values += [check.high + 1, 10**12 if inner is int else 1e300]
    elif inner is str:
        values = [3, 1.5, True, ["a"], None, "   "] + ([] if check.empty else [""])
        values += {"file": [paths.directory, paths.binary, paths.missing], "model": ["no-such-model"],
                   "device": ["gpu", "cuda:x", "tpu"], "text": []}[check.kind]
    else:
        raise AssertionError(f"no invalid values known for {hint}: extend examples()")
    return [v for v in values if not (optional and v is None)]


def _valid_item(hint: Any, check: Check) -> Any:
    inner, _ = _without_none(hint)
    if inner is str:
        return "x"
    return check.low if check.low is not None else (check.above or 0) + 1


def _numbers_out_of_range(hint: Any, check: Check) -> st.SearchStrategy:
    """Generated values past the declared bounds (the property part: not only the edges)."""
    inner, _ = _without_none(hint)
    if typing.get_origin(inner) in (tuple, list):
        return _numbers_out_of_range(typing.get_args(inner)[0], check).map(lambda v: [v])
    if inner is int:
        parts = ([st.integers(max_value=int(check.low) - 1)] if check.low is not None else []) + (
            [st.integers(min_value=int(check.high) + 1)] if check.high is not None else [])
    elif inner is float:
        finite = {"allow_nan": False, "allow_infinity": False}
        parts = ([st.floats(max_value=check.low, exclude_max=True, **finite)] if check.low is not None else []) + (
            [st.floats(max_value=check.above, **finite)] if check.above is not None else []) + (
            [st.floats(min_value=check.high, exclude_min=True, **finite)] if check.high is not None else [])
    else:
        parts = []
    return st.one_of(parts) if parts else st.nothing()


def assert_refused(analysis: str, name: str, value: Any) -> str:
    with pytest.raises(DiagError) as info:
        config_from_dict(get(analysis).config, {name: value})
    message = str(info.value)
    assert message.strip() and "\n" not in message, (analysis, name, value, message)
    return message


def test_every_number_field_states_its_bounds() -> None:
    """A count or rate with no stated range is where a huge or negative value slips through to compute."""
    unbounded = []
    for analysis, field, hint in FIELDS:
        inner, _ = _without_none(hint)
        if typing.get_origin(inner) in (tuple, list):
            inner, _ = _without_none(typing.get_args(inner)[0])
        check = _check(field)
        if inner in (int, float) and (check.high is None or (check.low is None and check.above is None)):
            unbounded.append(f"{analysis}.{field.name}")
    assert not unbounded, f"declare low/above and high with diag.contract.checked: {unbounded}"


@pytest.mark.parametrize("analysis", sorted(ANALYSES))
def test_defaults_and_audit_configs_pass_their_own_checks(analysis: str) -> None:
    declared = get(analysis)
    declared.config()
    for scale in (0.25, 1.0, 8.0):
        declared.audit_config(scale)


@pytest.mark.parametrize(("analysis", "field", "hint"), FIELDS, ids=[f"{a}.{f.name}" for a, f, _ in FIELDS])
def test_each_field_refuses_its_typical_bad_values(analysis: str, field: dataclasses.Field, hint: Any,
                                                   bad_paths: BadPaths, diag_home: Path) -> None:
    check = _check(field)
    for value in examples(hint, check, bad_paths):
        message = assert_refused(analysis, field.name, value)
        assert field.name in message or check.kind == "model", message
    assert not (diag_home / "runs").exists(), "validation opened the run store"


@settings(derandomize=True, max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_property_every_invalid_value_is_one_line_and_no_run(data: st.DataObject, bad_paths: BadPaths,
                                                            diag_home: Path) -> None:
    analysis, field, hint = data.draw(st.sampled_from(FIELDS), label="field")
    check = _check(field)
    value = data.draw(st.one_of(st.sampled_from(examples(hint, check, bad_paths)),
                                _numbers_out_of_range(hint, check)), label="value")
    assert_refused(analysis, field.name, value)
    assert not (diag_home / "runs").exists()


@pytest.mark.parametrize(("fields", "needle"), [
    ({"analysis": "tir", "temperature": math.nan}, "tir.temperature must be a finite number, got nan"),
    ({"analysis": "tir", "per_cell": 100_000_000}, "tir.per_cell 100000000 out of range: must be 1..1000"),
    ({"analysis": "capture", "layers": [-1]}, "capture.layers -1 out of range"),
    ({"analysis": "credit", "data": "BINARY"}, "is not a UTF-8 text file"),
    ({"analysis": "cdas-toy", "batch": 10**12}, "cdas-toy.batch 1000000000000 out of range: must be 1..65536"),
], ids=lambda v: v["analysis"] if isinstance(v, dict) else "")
def test_diag_run_refuses_bad_fields_in_one_line(fields: dict, needle: str, tmp_path: Path, bad_paths: BadPaths,
                                                 diag_home: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({k: bad_paths.binary if v == "BINARY" else v for k, v in fields.items()}))
    proc = subprocess.run([sys.executable, "-m", "diag.cli", "run", str(config)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and needle in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not proc.stdout
    runs = diag_home / "runs"
    assert not runs.exists() or not [p for p in runs.iterdir() if p.is_dir()], "bad input left a run behind"


def test_jsonl_errors_name_the_line_and_column_in_plain_words(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"a": "tab\there"}\n')
    with pytest.raises(DiagError) as info:
        read_json_lines(path, "rows")
    assert str(info.value) == f"{path}:2: invalid JSON at column 11: Invalid control character"


def test_a_json_array_file_reads_like_jsonl_with_items_for_lines(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"a": 1}, {"a": 2}], indent=2))  # json.dump of a list, Dataset.to_json(lines=False)
    assert read_json_lines(path, "rows") == [(1, {"a": 1}), (2, {"a": 2})]
    path.write_text(json.dumps([{"a": 1}, 7]))
    with pytest.raises(DiagError, match=r":2: expected a JSON object as array item 2, got int"):
        read_json_lines(path, "rows")
    path.write_text("[]")
    with pytest.raises(DiagError, match="is an empty JSON array"):
        read_json_lines(path, "rows")
    path.write_text('[{"a": 1},\n{"a": }]')  # a broken array: the line reader names where
    with pytest.raises(DiagError, match=r":1: invalid JSON"):
        read_json_lines(path, "rows")


def test_app_form_refuses_a_bad_layer_in_one_line_before_any_job() -> None:
    """The launch form goes through the same checks: one line, from the model's config, no model load."""
    pytest.importorskip("panel")
    from apps.forms import ConfigForm
    from diag import capture

    form = ConfigForm(capture.Config, capture.Config())
    form.widgets["layers"].value = "0, 99"
    with pytest.raises(DiagError, match=r"layer\(s\) \[99\] out of range: smollm2-135m-instruct has layers 0\.\.29"):
        form.config()
    form.widgets["layers"].value = "0, 29"
    form.widgets["device"].value = "gpu"
    with pytest.raises(DiagError, match="capture.device: unknown device 'gpu'"):
        form.config()


def test_gguf_header_facts_match_ggufs_own_reader() -> None:
    """The layer check's fast header reader agrees with gguf's full parser on the embedded model."""
    from gguf import GGUFReader

    from diag.zoo.sources import _gguf_config, _smollm2_gguf

    reader = GGUFReader(_smollm2_gguf())

    def field(key: str) -> Any:
        value = reader.fields[key]
        return value.parts[value.data[0]].tolist()[0]

    facts = _gguf_config(_smollm2_gguf())
    assert facts == {"model_type": "llama", "num_hidden_layers": field("llama.block_count"),
                     "hidden_size": field("llama.embedding_length"),
                     "intermediate_size": field("llama.feed_forward_length"),
                     "num_attention_heads": field("llama.attention.head_count")}
    assert facts["num_hidden_layers"] == 30 and facts["hidden_size"] == 576


def test_a_truncated_gguf_header_is_one_line(tmp_path: Path) -> None:
    from diag.zoo.sources import _gguf_config, _smollm2_gguf

    cut = tmp_path / "cut.gguf"
    cut.write_bytes(_smollm2_gguf().read_bytes()[:200])
    with pytest.raises(DiagError, match="truncated or malformed GGUF header"):
        _gguf_config(cut)
    (tmp_path / "not.gguf").write_bytes(b"PK\x03\x04")
    with pytest.raises(DiagError, match="is not a GGUF file"):
        _gguf_config(tmp_path / "not.gguf")
