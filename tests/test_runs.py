"""Run store: atomic writes, index, content addressing, and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from diag.atomic import atomic_path
from diag.runs import RunStore

JOB = Path(__file__).parent / "resumable_job.py"


def test_same_config_maps_to_same_run(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    a = store.open("toy", {"x": 1, "y": [1, 2]})
    b = store.open("toy", {"y": [1, 2], "x": 1})
    c = store.open("toy", {"x": 2, "y": [1, 2]})
    assert a.run_id == b.run_id != c.run_id
    assert {r.run_id for r in store.list(analysis="toy")} == {a.run_id, c.run_id}


def test_arrays_json_and_index_roundtrip(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    run = store.open("toy", {"x": 1}, group="g1")
    arrays = {"a": np.arange(6.0).reshape(2, 3), "b": np.array([1, 2], dtype=np.int64)}
    run.write_arrays("arrays", arrays)
    loaded = run.read_arrays("arrays")
    assert all(np.array_equal(loaded[k], v) for k, v in arrays.items())
    assert not run.finished
    run.finish({"score": 0.5})
    assert run.finished and run.summary == {"score": 0.5}
    (info,) = store.list(status="finished", group="g1")
    assert info.summary == {"score": 0.5}
    assert store.get(run.run_id[:12]).run_id == run.run_id


def test_atomic_path_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def _job(root: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(JOB), str(root), *extra], stdout=subprocess.PIPE, text=True, env=env)


def test_sigkill_leaves_no_result_and_resume_matches_uninterrupted(tmp_path: Path) -> None:
    killed_root, clean_root = tmp_path / "killed", tmp_path / "clean"
    proc = _job(killed_root, "--sleep", "0.05")
    # Wait until a few checkpoints exist, then kill without warning.
    for line in proc.stdout:
        if line.startswith("step 15"):
            break
    (live,) = RunStore(killed_root).list()
    assert live.status == "running" and live.note == ""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (run_dir,) = [p for p in killed_root.iterdir() if p.is_dir()]
    (dead,) = RunStore(killed_root).list()
    assert dead.status == "interrupted" and f"process {proc.pid} " in dead.note
    assert [r.run_id for r in RunStore(killed_root).list(status="interrupted")] == [run_dir.name]
    assert not (run_dir / "result.json").exists()
    assert (run_dir / "checkpoint.pt").exists()
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]

    resumed = subprocess.run([sys.executable, str(JOB), str(killed_root)], capture_output=True, text=True, check=True)
    first_resumed = int(resumed.stdout.split("step ")[1].split()[0])
    assert first_resumed > 1, "the second run must start from the checkpoint, not from step 1"
    clean = subprocess.run([sys.executable, str(JOB), str(clean_root)], capture_output=True, text=True, check=True)
    resumed_result = json.loads(resumed.stdout.strip().splitlines()[-1])
    clean_result = json.loads(clean.stdout.strip().splitlines()[-1])
    assert resumed_result == clean_result
    assert (run_dir / "result.json").exists() and not (run_dir / "checkpoint.pt").exists()
    assert [(r.status, r.note) for r in RunStore(killed_root).list()] == [("finished", "")]


def test_running_means_its_recorded_process_lives(tmp_path: Path) -> None:
    """A reused pid (other start time), a reboot (other boot id) or a gone pid read as interrupted; a process on
    another host cannot be checked from here and stays running."""
    store = RunStore(tmp_path)
    run = store.open("toy", {"x": 1})  # claimed by this process
    process = run.dir / "process.json"
    owner = json.loads(process.read_text())
    assert owner["pid"] == os.getpid() and store.info(run.run_id).status == "running"
    for change, expected in [({"start": owner["start"] + 1}, "interrupted"), ({"boot_id": "another-boot"},
                             "interrupted"), ({"pid": 2**22 + 12345}, "interrupted"),
                             ({"host": "elsewhere", "pid": 1}, "running")]:
        process.write_text(json.dumps({**owner, **change}))
        assert store.info(run.run_id).status == expected, change
    process.unlink()
    assert store.info(run.run_id).status == "interrupted"
    store.open("toy", {"x": 1})  # running its config again claims it
    assert store.info(run.run_id).status == "running"
    run.fail("boom")
    assert store.info(run.run_id).status == "failed" and not process.exists()


def test_finished_run_is_reused_not_recomputed(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(JOB), str(tmp_path)], capture_output=True, check=True)
    start = time.time()
    again = subprocess.run([sys.executable, str(JOB), str(tmp_path)], capture_output=True, text=True, check=True)
    assert "step" not in again.stdout.split("{")[0]
    assert time.time() - start < 30


def test_a_run_stopped_by_bad_input_after_a_checkpoint_ends_failed_and_resumes(tmp_path: Path) -> None:
    """The state always ends: not `running` while the (long-lived) process that stopped it carries on."""
    from dataclasses import dataclass

    from diag.contract import Analysis, run
    from diag.errors import DiagError

    @dataclass(frozen=True)
    class Config:
        lines: tuple[str, ...] = ("1", "x", "3")

    @dataclass
    class Total:
        total: float

        def summary(self) -> dict:
            return {"total": self.total}

        def save(self, run) -> None:
            run.write_json("total.json", self.summary())

        @classmethod
        def load(cls, run) -> Total:
            return cls(run.read_json("total.json")["total"])

    fixed: dict[str, float] = {}

    def compute(config, run, _progress) -> Total:
        saved = run.load_checkpoint() or {"next": 0, "total": 0.0}
        total = saved["total"]
        for i in range(saved["next"], 3):
            run.save_checkpoint({"next": i, "total": total})
            line = fixed.get(str(i), Config().lines[i])
            try:
                total += float(line)
            except ValueError as exc:
                raise DiagError(f"line {i + 1} is not a number: {line!r}") from exc
        return Total(total)

    summing = Analysis(name="summing", config=Config, result=Total, compute=compute,
                       audit_config=lambda scale: Config(), description="The sum of the lines.")
    store = RunStore(tmp_path)
    with pytest.raises(DiagError):
        run(summing, Config(), store=store)
    (info,) = store.list()
    assert (info.status, info.summary) == ("failed", {"error": "DiagError: line 2 is not a number: 'x'"})
    fixed["1"] = 2.0  # the input is repaired; the same config resumes from its checkpoint at line 2
    assert run(summing, Config(), store=store)[1].total == 6.0
    assert [r.status for r in store.list()] == ["finished"]
