"""Every key an app page or a reading guide reads from a run's summary is declared in its analysis' schema.

Schemas are TypedDicts (``Analysis.summary``); ``diag.contract.run`` refuses a summary with an undeclared key, and
this test reads the source of the pages and of the modules holding the guides for ``summary["key"]``,
``summary.get("key")`` and ``summary[f"family_{x}"]``, so a renamed key fails here instead of blanking a page.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from diag.contract import summary_key_declared
from diag.registry import ANALYSES

ROOT = Path(__file__).resolve().parents[1]
STORE = {"error"}  # what RunStore.fail stores as the summary of a run that stopped
PAGES = sorted((ROOT / "apps" / "pages").glob("*.py"))


def _is_summary(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id == "summary") or (
        isinstance(node, ast.Attribute) and node.attr == "summary")


def _key(node: ast.AST) -> str | None:
    """A literal key, or an f-string as a family with ``{}`` for each interpolation; None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def summary_reads(source: str) -> list[tuple[int, str]]:
    """(line, key) of each top-level read of a summary."""
    reads = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_summary(node.value):
            key = _key(node.slice)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and _is_summary(node.func.value) and node.args):
            key = _key(node.args[0])
        else:
            continue
        if key is not None:
            reads.append((node.lineno, key))
    return reads


def declared(schemas: list[type], key: str) -> bool:
    """A literal key, or every key of a read family (``f"{m}_elicit"``), is declared by one of ``schemas``."""
    if any(summary_key_declared(schema, key.replace("{}", "x")) for schema in schemas):
        return True  # the key itself, or an instance of the read family, is declared (as a key or a family)
    read = re.compile(".+".join(map(re.escape, key.split("{}"))))
    return any(read.fullmatch(name) for schema in schemas for name in schema.__annotations__)


def _imported_modules(source: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def _undeclared(source: str, schemas: list[type]) -> list[str]:
    return [f"line {line}: {key!r}" for line, key in summary_reads(source)
            if key not in STORE and not declared(schemas, key)]


def test_the_reader_finds_literal_and_family_keys_and_refuses_unknown_ones() -> None:
    from diag.cdas.config import ToySummary

    source = ('a = summary["mlp_accuracy"]\nb = run.summary.get(f"iia_{o}_{v}")\nc = summary["iia_das"]\n'
              'summary["x"] = 1\n')
    assert summary_reads(source) == [(1, "mlp_accuracy"), (2, "iia_{}_{}"), (3, "iia_das")]
    assert _undeclared(source, [ToySummary]) == ["line 3: 'iia_das'"]


def test_every_registered_analysis_declares_a_typed_summary() -> None:
    assert all(isinstance(a.summary, type) and a.summary.__annotations__ for a in ANALYSES.values())


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_pages_read_only_declared_summary_keys(page: Path) -> None:
    source = page.read_text()
    imported = _imported_modules(source)
    schemas = [a.summary for a in ANALYSES.values()
               if {a.config.__module__, a.compute.__module__} & imported]
    if not schemas:  # a page of every analysis' runs (the Runs page)
        schemas = [a.summary for a in ANALYSES.values()]
    assert _undeclared(source, schemas) == [], page.name


@pytest.mark.parametrize("name", sorted(ANALYSES))
def test_guides_read_only_declared_summary_keys(name: str) -> None:
    analysis = ANALYSES[name]
    module = sys.modules[analysis.compute.__module__]  # where its guide's headline and baselines live
    schemas = [a.summary for a in ANALYSES.values() if a.compute.__module__ == module.__name__]
    assert _undeclared(Path(module.__file__).read_text(), schemas) == [], module.__name__
