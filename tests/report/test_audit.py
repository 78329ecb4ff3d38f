"""``diag audit``: every registered analysis honours the audit contract; a second audit reuses the stored runs."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from diag.registry import ANALYSES, get
from diag.report.sections import Guide


@pytest.mark.parametrize("name", sorted(ANALYSES))
def test_registered_analyses_expose_the_audit_contract(name: str) -> None:
    analysis = get(name)
    assert analysis.name == name
    assert isinstance(analysis.guide, Guide) and analysis.guide.question and analysis.guide.limitations
    for scale in (1.0, 4.0):
        config = analysis.audit_config(scale)
        assert isinstance(config, analysis.config) and dataclasses.is_dataclass(config)
        json.dumps(dataclasses.asdict(config))  # JSON-able, so it hashes into a run id
    assert callable(analysis.compute) and hasattr(analysis.result, "load")


def test_audit_computes_then_reuses_and_writes_one_report(smollm2, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "diag.cli", "audit", "--only", "capture", "--json"],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    first = json.loads(out.stdout)
    (row,) = first["runs"]
    assert row["analysis"] == "capture" and row["status"] == "computed" and row["run_id"].startswith("capture-")
    report = tmp_path / first["report"]
    assert report.parent == tmp_path / "reports" and report.suffix == ".html"
    assert "audit:" in out.stderr  # the tqdm progress bar over analyses

    from diag.audit import audit

    second = audit(only=["capture"], out=tmp_path / "again.html", show_progress=False)
    assert [(e.run_id, e.status) for e in second.execution] == [(row["run_id"], "reused")]
    html = second.report.read_text()
    assert "1 computed" not in html and "0 computed, 1 reused, 0 failed" in " ".join(html.split())
    assert f'id="{row["run_id"]}"' in html


def test_audit_rejects_unknown_analyses_and_bad_scales() -> None:
    from diag.audit import audit
    from diag.errors import DiagError

    with pytest.raises(DiagError, match="unknown analysis 'nope'"):
        audit(only=["nope"], show_progress=False)
    with pytest.raises(DiagError, match="--scale must be positive"):
        audit(scale=0.0, show_progress=False)


def test_a_failing_analysis_is_reported_with_its_error_and_the_command_exits_1(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from halting_analysis import ANALYSIS  # tests/report/halting_analysis.py
    from typer.testing import CliRunner

    from diag.audit import audit
    from diag.cli import app

    monkeypatch.setitem(ANALYSES, "halting", ANALYSIS)
    outcome = audit(only=["halting"], out=tmp_path / "a.html", show_progress=False)
    (row,) = outcome.execution
    assert row.status == "failed" and row.note == "DiagError: line 3 is not a number: 'three'"
    assert row.cpu_seconds >= 0 and outcome.failed == ["halting"]
    html = " ".join(outcome.report.read_text().split())
    assert "This run did not finish: DiagError: line 3 is not a number: &#39;three&#39;" in html
    assert "0 computed, 0 reused, 1 failed" in html
    result = CliRunner().invoke(app, ["audit", "--only", "halting", "--out", str(tmp_path / "b.html")])
    assert result.exit_code == 1 and (tmp_path / "b.html").exists()
