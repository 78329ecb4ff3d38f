"""Run ids are names, not paths: `diag runs rm/show` on anything outside the store exit 2 and touch nothing."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest

from diag.cli import main
from diag.errors import DiagError
from diag.run_ids import RUN_ID, is_run_id, run_id_for
from diag.runs import RunStore


def tree_digest(root: Path) -> str:
    """sha256 over every path under ``root`` (not following symlinks): names, link targets and file bytes.

    SQLite's index files are left out: opening a store may checkpoint its write-ahead log.
    """
    digest = hashlib.sha256()
    for parent, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(dirs + files):
            if name.startswith("index.sqlite"):
                continue
            path = Path(parent) / name
            digest.update(str(path.relative_to(root)).encode() + b"\0")
            if path.is_symlink():
                digest.update(b"->" + os.readlink(path).encode())
            elif path.is_file():
                digest.update(path.read_bytes())
    return digest.hexdigest()


def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    """Run ``diag ARGS`` in this process; (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["diag", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
        sys.exit(0)
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


@pytest.fixture
def stores(tmp_path: Path, diag_home: Path) -> dict[str, object]:
    """The CLI's store with one real run, a victim directory outside it that looks like a run, a symlink from
    the store to the victim, another store with a run of its own, and an index row whose id is a path."""
    victim = tmp_path / "outside" / "victim"
    victim.mkdir(parents=True)
    (victim / "config.json").write_text(json.dumps({"analysis": "toy", "config": {}}))
    (victim / "result.json").write_text(json.dumps({"summary": {"secret": 1}}))
    (victim / "precious.txt").write_text("do not delete")
    store = RunStore(diag_home / "runs")
    real = store.open("toy", {"x": 1})
    real.finish({"score": 1.0})
    link_id = "toy-0123456789abcdef"
    (store.root / link_id).symlink_to(victim, target_is_directory=True)
    other = RunStore(tmp_path / "other")
    foreign = other.open("toy", {"x": 2})
    foreign.finish({"score": 2.0})
    with sqlite3.connect(store.root / "index.sqlite") as db:
        db.execute("INSERT INTO runs VALUES (?, 'toy', 'finished', 0, 0, NULL, '{}')", (str(victim),))
    return {"store": store, "victim": victim, "real": real.run_id, "link": link_id, "foreign": foreign.run_id,
            "outside": tmp_path / "outside", "other": other}


def bad_ids(s: dict) -> list[str]:
    victim, root = s["victim"], s["store"].root
    return [
        str(victim),  # absolute path
        os.path.relpath(victim, root),  # ../../outside/victim
        f"{s['real']}/../../outside/victim",
        "..", ".", "", "/", "~", f"{s['real']}/", f"./{s['real']}",
        s["link"],  # a symlink in the store pointing out of it
        s["link"][:8],  # a prefix only the symlink matches
        s["foreign"],  # an id of another store
        str(s["other"].root / s["foreign"]),  # another store's run, by path
        "TOY-0123456789ABCDEF",
    ]


@pytest.mark.parametrize("command", ["rm", "show", "verify"])
def test_runs_commands_refuse_anything_outside_the_store(command: str, stores: dict, capsys, monkeypatch) -> None:
    outside_before = tree_digest(stores["outside"])
    store_before = tree_digest(stores["store"].root)
    other_before = tree_digest(stores["other"].root)
    for run_id in bad_ids(stores):
        code, out, err = cli(capsys, monkeypatch, "runs", command, run_id)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (run_id, code, err)
        assert ("not a run id" in lines[0] or "no run" in lines[0]), (run_id, lines)
        assert "secret" not in out
    assert tree_digest(stores["outside"]) == outside_before
    assert tree_digest(stores["other"].root) == other_before
    assert tree_digest(stores["store"].root) == store_before


def test_filtered_rm_never_follows_an_index_row_or_symlink_out_of_the_store(stores: dict, capsys,
                                                                            monkeypatch) -> None:
    outside_before = tree_digest(stores["outside"])
    code, out, err = cli(capsys, monkeypatch, "runs", "rm", "--status", "finished", "--json")
    assert code == 0, err
    assert json.loads(out)["removed"] == [stores["real"]]
    assert tree_digest(stores["outside"]) == outside_before
    assert (stores["store"].root / stores["link"]).is_symlink()  # not a run of this store: left alone


def test_get_resolves_ids_and_prefixes_only_among_real_run_directories(stores: dict) -> None:
    store = stores["store"]
    assert store.get(stores["real"]).run_id == stores["real"]
    assert store.get("toy").run_id == stores["real"]  # the symlink is not a candidate for the prefix
    for run_id in bad_ids(stores):
        with pytest.raises(DiagError):
            store.get(run_id)
    assert [info.run_id for info in store.list()] == [stores["real"]]  # the path-shaped index row is not a run


def test_one_run_id_rule() -> None:
    run_id = run_id_for("cdas-steer", {"layer": 3})
    assert is_run_id(run_id) and RUN_ID.fullmatch(run_id)
    assert not is_run_id("../cdas-steer-0123456789abcdef") and not is_run_id("toy-0123")
    with pytest.raises(DiagError, match="lower-case"):
        run_id_for("../escape", {})


@pytest.mark.parametrize("args", [
    ("list", "--status", "finshed"), ("list", "--analysis", "captur"),
    ("rm", "--status", "finshed"), ("rm", "--analysis", "captur"), ("rm", "--analysis", "toy", "--status", "done"),
])
def test_status_and_analysis_filters_are_validated(args: tuple[str, ...], stores: dict, capsys, monkeypatch) -> None:
    store_before = tree_digest(stores["store"].root)
    code, out, err = cli(capsys, monkeypatch, "runs", *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "choose one of" in lines[0] and out == "", err
    choices = lines[0].split("choose one of ")[1].split(", ")
    assert ("finished" in choices and "interrupted" in choices and "corrupt" in choices) if "status" in lines[0] \
        else ("capture" in choices and "toy" in choices)  # registered analyses, and those the store holds
    assert tree_digest(stores["store"].root) == store_before


def test_filters_select_by_current_status(stores: dict, capsys, monkeypatch) -> None:
    code, out, _ = cli(capsys, monkeypatch, "runs", "list", "--analysis", "toy", "--status", "finished")
    assert code == 0 and out.split()[:2] == [stores["real"], "finished"]
    code, out, _ = cli(capsys, monkeypatch, "runs", "list", "--status", "running")
    assert code == 0 and out == ""
