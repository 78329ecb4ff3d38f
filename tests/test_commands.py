"""A command generated from a Config: option per field, help from the field's comment, the Config's defaults.

A small analysis whose result is its own config, so what the command passed is what the summary shows.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal

import pytest
import typer
from typer.testing import CliRunner

from diag.commands import AFTER, add_analysis_commands, after_run
from diag.contract import Analysis, Cli, checked, validated
from diag.errors import DiagError
from diag.fields import describe, field_docs, parse_text, show
from diag.run_dir import Run


@dataclass(frozen=True)
@validated
class Config:
    # how many times to count
    # (two lines above the field)
    count: int = checked(3, low=1, high=10)
    names: tuple[str, ...] = checked(("a", "b"), max_len=5)  # comma-separated names
    mode: Literal["fast", "slow"] = "fast"
    loud: bool = False  # say it loudly
    ratio: float | None = checked(None, above=0, high=1)  # a share; empty: none
    target: str = checked("here", cli=Cli(argument="optional"))  # where to count
    n_items: int = checked(2, low=1, high=9, cli=Cli(option="--n"))  # items per name
    target_sha256: str | None = None  # filled by pinning, never typed


@dataclass
class Result:
    config: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {"config": self.config}

    def save(self, run: Run) -> None:
        run.write_json("config_seen.json", self.config)

    @classmethod
    def load(cls, run: Run) -> Result:
        return cls(run.read_json("config_seen.json"))


ECHO = Analysis(name="echo-config", config=Config, result=Result, audit_config=lambda scale: Config(),
                compute=lambda config, run, progress: Result(dataclasses.asdict(config)),
                description="Run nothing, print the config the command built.", command=("toys", "echo"))


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setattr("diag.commands.AFTER", dict(AFTER))  # the after_run below is this test's only
    built = typer.Typer()
    add_analysis_commands(built, [ECHO], {})
    return built


def invoke(app: typer.Typer, *args: str) -> Any:
    result = CliRunner().invoke(app, ["toys", "echo", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_field_docs_are_the_comments_above_and_beside_each_field() -> None:
    docs = field_docs(Config)
    assert docs["count"] == "how many times to count (two lines above the field)"
    assert docs["names"] == "comma-separated names" and docs["mode"] == ""
    assert [spec.name for spec in describe(Config)] == ["count", "names", "mode", "loud", "ratio", "target",
                                                        "n_items"]  # hashes are pinned, never typed
    assert {spec.name: spec.kind for spec in describe(Config)} == {
        "count": "int", "names": "list", "mode": "choice", "loud": "flag", "ratio": "text", "target": "text",
        "n_items": "int"}


def test_typed_text_parses_or_fails_in_one_line() -> None:
    specs = {spec.name: spec for spec in describe(Config)}
    assert parse_text(specs["names"], " p, q ,") == ["p", "q"] and show(specs["names"], ("p", "q")) == "p, q"
    assert parse_text(specs["ratio"], "") is None and parse_text(specs["ratio"], "0.5") == 0.5
    with pytest.raises(DiagError, match="ratio: expected a number, got 'half'"):
        parse_text(specs["ratio"], "half")
    with pytest.raises(DiagError, match="--count: expected a number"):
        parse_text(dataclasses.replace(specs["count"], kind="text"), "x", "--count")


def test_options_map_to_fields_and_defaults_come_from_the_config(app: typer.Typer) -> None:
    given = json.loads(invoke(app, "there", "--count", "5", "--names", "p,q", "--mode", "slow", "--loud",
                              "--ratio", "0.25", "--n", "4", "--json"))
    assert given["config"] == {"count": 5, "names": ["p", "q"], "mode": "slow", "loud": True, "ratio": 0.25,
                               "target": "there", "n_items": 4, "target_sha256": None}
    assert json.loads(invoke(app, "--json"))["config"] == json.loads(json.dumps(dataclasses.asdict(Config())))
    text = " ".join(invoke(app, "--help").split())
    assert "how many times to count" in text and "[default: 3]" in text and "[default: a, b]" in text
    assert "--n " in text and "--n-items" not in text and "sha256" not in text


def test_bad_values_are_refused_by_the_config(app: typer.Typer) -> None:
    result = CliRunner().invoke(app, ["toys", "echo", "--count", "11"])
    assert isinstance(result.exception, DiagError) and "echo-config.count 11 out of range" in str(result.exception)


def test_after_run_adds_options_and_summary_keys(app: typer.Typer) -> None:
    @after_run("echo-config")
    def shout(result: Result, shout: bool = False) -> dict[str, Any]:
        return {"shouted": result.config["target"].upper()} if shout else {}

    built = typer.Typer()
    add_analysis_commands(built, [ECHO], {})
    summary = json.loads(invoke(built, "--shout", "--json"))
    assert summary["shouted"] == "HERE" and "shouted" not in json.loads(invoke(built, "--json"))
