"""Integrity: a finished run's manifest catches damaged files; every reader refuses them and re-running repairs.

The CLI test is the issue's done-when: a store with a truncated ``result.json`` and a truncated ``.npz`` lists
both runs as corrupt, ``show``/``report``/``verify`` refuse them with one line naming the file, and running the
same configs again recomputes them to the same numbers.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_runs_ids import cli  # `diag ARGS` in this process

from diag.contract import Analysis, run
from diag.errors import DiagError
from diag.run_dir import Run
from diag.run_files import CHECKPOINT_FILE, MANIFEST_FILE, RESULT_FILE
from diag.runs import RunStore


@dataclass(frozen=True)
class Config:
    n: int = 50
    seed: int = 0


@dataclass
class Result:
    """A seeded random walk: its arrays go to an .npz, its end point to a JSON table."""

    walk: np.ndarray

    def summary(self) -> dict[str, Any]:
        return {"end": float(self.walk[-1]), "max": float(self.walk.max())}

    def save(self, run: Run) -> None:
        run.write_arrays("walk", {"walk": self.walk})
        run.write_json("table.json", {"end": float(self.walk[-1])})

    @classmethod
    def load(cls, run: Run) -> Result:
        assert run.read_json("table.json")["end"] == float(run.read_arrays("walk")["walk"][-1])
        return cls(run.read_arrays("walk")["walk"])


class Walk:
    """The analysis, counting how often it really computes (checkpointing halfway, as long jobs do)."""

    def __init__(self) -> None:
        self.computed = 0
        self.resumed_from: list[int] = []
        self.last_run_id: str | None = None
        self.analysis = Analysis(name="walk", config=Config, result=Result, compute=self.compute,
                                 audit_config=lambda scale: Config(), description="A seeded random walk.")

    def compute(self, config: Config, run: Run, _: Any) -> Result:
        self.computed += 1
        saved = run.load_checkpoint()
        self.resumed_from.append(saved["i"] if saved else 0)
        steps = np.random.default_rng(config.seed).normal(size=config.n)
        run.save_checkpoint({"i": config.n // 2})
        return Result(np.cumsum(steps))

    def __call__(self, config: Config, store: RunStore) -> Result:
        self.last_run_id, result = run(self.analysis, config, store=store)
        return result


def truncate(path: Path, keep: int = 10) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def status_of(store: RunStore, run_id: str) -> tuple[str, str]:
    (info,) = [i for i in store.list() if i.run_id == run_id]
    return info.status, info.note


def test_manifest_records_every_file_with_size_and_sha256(tmp_path: Path) -> None:
    store, walk = RunStore(tmp_path), Walk()
    walk(Config(), store)
    run = store.get(walk.last_run_id)
    files = json.loads((run.dir / MANIFEST_FILE).read_text())["files"]
    assert set(files) == {"config.json", "walk.npz", "table.json", RESULT_FILE}
    assert all(files[name]["size"] == (run.dir / name).stat().st_size for name in files)
    assert not (run.dir / CHECKPOINT_FILE).exists() and not (run.dir / "process.json").exists()
    assert status_of(store, run.run_id) == ("finished", "")


def test_one_file_can_be_checked_by_hash_and_the_rest_by_size(tmp_path: Path) -> None:
    """What the app's figure route does: hash only the file it serves (the run's arrays can be large)."""
    store, walk = RunStore(tmp_path), Walk()
    walk(Config(), store)
    run = store.get(walk.last_run_id)
    flip_byte(run.dir / "walk.npz")  # same size: only its hash tells
    assert run.problem(full=True, only=frozenset({"table.json"})) is None
    assert "walk.npz does not match its sha256" in run.problem(full=True, only=frozenset({"walk.npz"}))
    truncate(run.dir / "walk.npz")  # a size change is seen whichever files are hashed
    assert "walk.npz has 10 bytes" in run.problem(full=True, only=frozenset({"table.json"}))


@pytest.mark.parametrize(("damage", "name", "listed"), [
    (truncate, RESULT_FILE, "corrupt"),
    (truncate, "walk.npz", "corrupt"),
    (flip_byte, "walk.npz", "finished"),  # same size: listing (sizes only) cannot see it, loading does
    (lambda p: p.unlink(), "table.json", "corrupt"),
])
def test_damaged_run_is_refused_then_recomputed_and_repaired(damage, name: str, listed: str, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    store, walk = RunStore(tmp_path), Walk()
    first = walk(Config(), store)
    run_id = walk.last_run_id
    damage(tmp_path / run_id / name)
    status, note = status_of(store, run_id)
    assert status == listed and (name in note or listed == "finished")
    with pytest.raises(DiagError, match=f"run {run_id} is corrupt: {name}"):
        store.get(run_id)
    assert store.get(run_id, verify=False).run_id == run_id  # rm can still resolve it
    with caplog.at_level(logging.WARNING, logger="diag.contract"):
        again = walk(Config(), store)
    assert walk.computed == 2 and walk.resumed_from == [0, 0]  # no checkpoint survives a finished run
    assert [r.getMessage() for r in caplog.records if name in r.getMessage() and "computing it again" in
            r.getMessage()], caplog.text
    np.testing.assert_array_equal(again.walk, first.walk)
    assert status_of(store, run_id) == ("finished", "") and store.get(run_id).problem(full=True) is None
    walk(Config(), store)
    assert walk.computed == 2  # repaired: reused again


def test_repair_resumes_from_a_valid_checkpoint_and_drops_an_invalid_one(tmp_path: Path, caplog) -> None:
    store, walk = RunStore(tmp_path), Walk()
    walk(Config(), store)
    run = store.get(walk.last_run_id)
    truncate(run.dir / "walk.npz")
    run.save_checkpoint({"i": 25})  # as if killed during the finish, after a checkpoint
    walk(Config(), store)
    assert walk.resumed_from == [0, 25]
    truncate(run.dir / "walk.npz")
    (run.dir / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.WARNING, logger="diag.runs"):
        walk(Config(), store)
    assert walk.resumed_from == [0, 25, 0] and "checkpoint.pt does not load" in caplog.text
    assert status_of(store, run.run_id) == ("finished", "")


def test_a_damaged_config_json_is_rewritten_by_the_repair(tmp_path: Path) -> None:
    store, walk = RunStore(tmp_path), Walk()
    walk(Config(), store)
    run = store.get(walk.last_run_id)
    flip_byte(run.dir / "config.json")
    with pytest.raises(DiagError, match="config.json"):
        store.get(run.run_id)
    walk(Config(), store)
    assert walk.computed == 2 and run.config == {"n": 50, "seed": 0} and run.problem(full=True) is None


def test_runs_made_before_manifests_still_list_and_load(tmp_path: Path) -> None:
    """Old stores have no manifest: such a run is checked by structure (JSON parses, .npz opens; CRCs on load)."""
    store, walk = RunStore(tmp_path), Walk()
    first = walk(Config(), store)
    run = store.get(walk.last_run_id)
    (run.dir / MANIFEST_FILE).unlink()
    assert status_of(store, run.run_id) == ("finished", "made before manifests: checked by structure, not hashes")
    assert walk(Config(), store).walk.tolist() == first.walk.tolist() and walk.computed == 1
    assert store.get(run.run_id).summary == first.summary()
    flip_byte(run.dir / "walk.npz")  # same size, bad CRC
    assert status_of(store, run.run_id)[0] == "finished"
    with pytest.raises(DiagError, match="walk.npz"):
        store.get(run.run_id)
    truncate(run.dir / RESULT_FILE)
    assert status_of(store, run.run_id) == ("corrupt", "result.json is not valid JSON")
    walk(Config(), store)  # re-running repairs it, and the repaired run has a manifest
    assert walk.computed == 2 and (run.dir / MANIFEST_FILE).exists()
    assert status_of(store, run.run_id) == ("finished", "")


def one_line(code: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, (code, err)
    return lines[0]


def test_cli_lists_corrupt_runs_refuses_them_and_repairs_them_by_rerunning(
        tmp_path: Path, diag_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def diag(*args: str) -> tuple[int, str, str]:
        return cli(capsys, monkeypatch, *args)

    configs, summaries = [], []
    for seed in (0, 1):
        config = tmp_path / f"tabular{seed}.json"
        config.write_text(json.dumps({"analysis": "credit_tabular", "vocab": 3, "length": 2, "n_pairs": 2000,
                                      "steps": 20, "seeds": [seed]}))
        code, out, err = diag("run", str(config), "--json")
        assert code == 0, err
        configs.append(config)
        summaries.append(json.loads(out))
    broken_result, broken_npz = (diag_home / "runs" / s["run_id"] for s in summaries)
    truncate(broken_result / RESULT_FILE, 100)
    truncate(broken_npz / "tabular.npz", 100)

    listed = {r["run_id"]: r for r in json.loads(diag("runs", "list", "--json")[1])["runs"]}
    assert listed[broken_result.name]["status"] == "corrupt" and "result.json" in listed[broken_result.name]["note"]
    assert listed[broken_npz.name]["status"] == "corrupt" and "tabular.npz" in listed[broken_npz.name]["note"]
    corrupt = diag("runs", "list", "--status", "corrupt")[1].split()
    assert broken_result.name in corrupt and broken_npz.name in corrupt
    code, _, err = diag("runs", "show", broken_result.name)
    assert "result.json" in one_line(code, err)
    code, _, err = diag("report", broken_npz.name, "--out", str(tmp_path / "r.html"))
    assert "tabular.npz" in one_line(code, err) and not (tmp_path / "r.html").exists()
    code, out, _ = diag("runs", "verify", "--json")
    assert code == 1 and set(json.loads(out)["corrupt"]) == {broken_result.name, broken_npz.name}

    for config, summary, broken in zip(configs, summaries, (RESULT_FILE, "tabular.npz"), strict=True):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="diag.contract"):
            code, out, err = diag("run", str(config), "--json")
        assert code == 0, err
        assert f"is corrupt: {broken}" in caplog.text and "computing it again" in caplog.text
        assert json.loads(out) == summary  # recomputed to the same numbers
    assert {r["status"] for r in json.loads(diag("runs", "list", "--json")[1])["runs"]} == {"finished"}
    code, out, _ = diag("runs", "verify")
    assert code == 0 and out.count("checked by sha256") == 2
