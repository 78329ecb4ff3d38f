"""Config validation: every wrong field is named in one line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pytest

from diag.config_checks import config_from_dict, config_to_dict
from diag.errors import DiagError
from diag.files import fingerprint
from diag.registry import ANALYSES


@dataclass(frozen=True)
class Example:
    steps: int = 10
    lr: float = 0.1
    mode: Literal["a", "b"] = "a"
    layers: tuple[int, ...] = (0,)
    name: str | None = None


def test_roundtrip_and_coercion() -> None:
    config = config_from_dict(Example, {"steps": 3, "lr": 1, "layers": [1, 2], "name": None})
    assert config == Example(steps=3, lr=1.0, layers=(1, 2))
    assert config_from_dict(Example, config_to_dict(config)) == config


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"stpes": 3}, "unknown field(s) stpes"),
        ({"steps": "3"}, "Example.steps"),
        ({"steps": True}, "Example.steps"),
        ({"mode": "c"}, "Example.mode"),
        ({"layers": 3}, "Example.layers"),
        ({"layers": [1, "x"]}, "Example.layers"),
    ],
)
def test_bad_fields_are_named(data: dict, needle: str) -> None:
    with pytest.raises(DiagError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        config_from_dict(Example, data)


def test_fingerprint_follows_content_not_location(tmp_path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        (folder / "sub").mkdir(parents=True)
        (folder / "weights.bin").write_bytes(b"\x00\x01\x02")
        (folder / "sub" / "config.json").write_text("{}")
    assert fingerprint(a) == fingerprint(b)  # same files elsewhere: same run
    (b / ".cache").write_text("ignored")  # hidden files (tool caches) do not count
    assert fingerprint(a) == fingerprint(b)
    (b / "weights.bin").write_bytes(b"\x00\x01\x03")  # a retrained checkpoint: a new run
    assert fingerprint(a) != fingerprint(b)
    (b / "weights.bin").write_bytes(b"\x00\x01\x02")
    (b / "sub" / "config.json").rename(b / "config.json")  # same bytes under another name: a new run
    assert fingerprint(a) != fingerprint(b)
    assert fingerprint(a / "weights.bin") != fingerprint(a / "sub" / "config.json")


def test_a_changed_local_model_is_a_new_run(tiny_llama_dir, tmp_path) -> None:
    import shutil

    from diag import capture

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_llama_dir, model_dir)
    config = capture.Config(model=str(model_dir))
    first = capture.ANALYSIS.pin(config)
    assert first.model_sha256 == fingerprint(model_dir)
    assert capture.ANALYSIS.pin(capture.Config()).model_sha256 is None  # the embedded model is fixed by its name
    (model_dir / "config.json").write_text((model_dir / "config.json").read_text().replace("}", ' , "x": 1}', 1))
    assert capture.ANALYSIS.pin(config).model_sha256 != first.model_sha256


def test_run_names_its_own_run_even_when_it_runs_another(tmp_path) -> None:
    from diag.contract import Analysis, run
    from diag.runs import RunStore

    @dataclass(frozen=True)
    class Steps:
        steps: int = 10

    @dataclass
    class Done:
        value: int

        def summary(self) -> dict:
            return {"value": self.value}

        def save(self, run) -> None:
            run.write_json("value.json", {"value": self.value})

        @classmethod
        def load(cls, run) -> Done:
            return cls(run.read_json("value.json")["value"])

    store = RunStore(tmp_path)
    child = Analysis(name="child", config=Steps, result=Done, compute=lambda config, r, p: Done(1),
                     audit_config=lambda scale: Steps(), description="A child run.")

    def outer_compute(config, handle, progress) -> Done:  # runs a child analysis on the same store first
        _, done = run(child, Steps(steps=1), store=store)
        return Done(done.value + 1)

    @dataclass(frozen=True)
    class Outer:
        steps: int = 10

    outer = Analysis(name="outer", config=Outer, result=Done, compute=outer_compute,
                     audit_config=lambda scale: Outer(), description="A run that runs a child.")
    run_id, result = run(outer, Outer(), store=store)
    assert result.value == 2
    assert run_id is not None and run_id.startswith("outer-")
    first = run_id
    child_id, _ = run(child, Steps(steps=1), store=store)  # reused: still named
    assert child_id.startswith("child-")
    again_id, again = run(outer, Outer(), store=store)
    assert again.value == 2 and again_id == first


def _command(path: tuple[str, ...]) -> Any:
    import typer

    from diag.cli import app

    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


@pytest.mark.parametrize("name", sorted(ANALYSES))
def test_every_declared_analysis_honours_the_contract(name: str) -> None:
    """scikit-learn's ``parametrize_with_checks`` for our analyses: training and ground-truth runs included."""
    import dataclasses
    import inspect
    import json

    from diag.contract import NAME, Analysis
    from diag.fields import describe
    from diag.report.sections import Guide

    analysis = ANALYSES[name]
    assert isinstance(analysis, Analysis) and analysis.name == name and NAME.fullmatch(name)
    assert analysis.description.strip() and "\n" not in analysis.description
    config = analysis.config()  # every default passes its own checks
    assert dataclasses.is_dataclass(config) and type(config).__dataclass_params__.frozen
    for scale in (0.25, 1.0, 8.0):
        audit = analysis.audit_config(scale)
        assert isinstance(audit, analysis.config)
        assert config_from_dict(analysis.config, json.loads(json.dumps(config_to_dict(audit)))) == audit
    assert list(inspect.signature(analysis.compute).parameters)[:3] == ["config", "run", "progress"]
    for verb in ("summary", "save", "load"):
        assert callable(getattr(analysis.result, verb)), verb
    assert isinstance(analysis.guide, Guide) and analysis.guide.question and analysis.guide.limitations
    # its command: one option or argument per user-facing field, plus --json
    command = _command(analysis.command)
    assert command.help == analysis.description
    assert {p.name for p in command.params} >= {spec.name for spec in describe(analysis.config)} | {"as_json"}
    assert len({a.command for a in ANALYSES.values()}) == len(ANALYSES)  # no two share a command


def test_runs_stored_under_the_old_names_are_read_as_the_renamed_analyses() -> None:
    """Registry names are all spelled with "-" now; runs stored as boundary_episodes etc. keep their guide and Result."""
    from diag.registry import RENAMED, find, get
    from diag.report.render import guide_for

    for old, new in RENAMED.items():
        assert "_" in old and find(old) is get(old) is ANALYSES[new]
        assert guide_for(old) is ANALYSES[new].guide
    assert find("no-such-analysis") is None
