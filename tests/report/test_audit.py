"""``diag audit``: every registered analysis honours the audit contract; a second audit reuses the stored runs."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from diag.registry import ANALYSES, analysis_module
from diag.report.sections import Guide


@pytest.mark.parametrize("name", sorted(ANALYSES))
def test_registered_analyses_expose_the_audit_contract(name: str) -> None:
    module = analysis_module(name)
    assert module.ANALYSIS == name
    assert isinstance(module.GUIDE, Guide) and module.GUIDE.question and module.GUIDE.limitations
    for scale in (1.0, 4.0):
        config = module.audit_config(scale)
        assert isinstance(config, module.Config) and dataclasses.is_dataclass(config)
        json.dumps(dataclasses.asdict(config))  # JSON-able, so it hashes into a run id
    assert callable(module.run) and hasattr(module.Result, "load")


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
