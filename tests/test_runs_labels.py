"""Runs can be named, tagged and annotated in the index, found by text, and older stores gain the columns."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from diag.cli import main
from diag.errors import DiagError
from diag.labels import Label
from diag.runs import RunStore


def finished(store: RunStore, analysis: str, layer: int, group: str | None = None) -> str:
    run = store.open(analysis, {"model": "nowhere", "layers": [layer]}, group=group)
    run.write_json("table.json", [{"layer": layer}])
    run.finish({"layer": layer})
    return run.run_id


def test_label_is_stored_listed_and_edited_without_touching_the_run(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    run_id = finished(store, "capture", 0)
    manifest = (tmp_path / run_id / "manifest.json").read_bytes()
    info = store.label(run_id[:12], name="  baseline ", add_tags=("paper", "fig2"), note="first try")
    assert info.label == Label("baseline", ("paper", "fig2"), "first try")
    # Edits: add a tag (no duplicate), remove one, keep the name, clear the note.
    info = store.label(run_id, add_tags=("paper", "cpu"), remove_tags=("fig2",), note="")
    assert info.label == Label("baseline", ("paper", "cpu"), "")
    assert RunStore(tmp_path).list()[0].label == info.label  # persisted in the index, seen by a new handle
    assert info.status == "finished" and (tmp_path / run_id / "manifest.json").read_bytes() == manifest
    store.get(run_id)  # hashes still match: labelling writes only the index


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"name": "two\nlines"}, "one line"),
    ({"name": "x" * 121}, "at most 120"),
    ({"add_tags": ("has space",)}, "must be one word"),
    ({"add_tags": ("a,b",)}, "must be one word"),
    ({"note": "n" * 4001}, "at most 4000"),
])
def test_bad_labels_are_refused_before_anything_is_written(tmp_path: Path, kwargs: dict, needle: str) -> None:
    store = RunStore(tmp_path)
    run_id = finished(store, "capture", 0)
    store.label(run_id, name="kept")
    with pytest.raises(DiagError, match=needle):
        store.label(run_id, **kwargs)
    assert store.info(run_id).label == Label("kept")


def test_search_matches_every_word_in_id_analysis_group_and_label(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    a = finished(store, "capture", 0)
    b = finished(store, "capture", 1, group="sweep-lr")
    c = finished(store, "credit_tabular", 2)
    store.label(a, name="Baseline run", add_tags=("paper",))
    store.label(c, note="Seeds disagree: check the PAPER figure")

    def found(text: str) -> set[str]:
        return {i.run_id for i in store.list(search=text)}

    assert found("paper") == {a, c}  # a tag, and a word of a note, in any case
    assert found("baseline PAPER") == {a}  # every word must occur
    assert found("credit_tab") == {c}  # the analysis
    assert found("sweep-lr") == {b}  # the group
    assert found(b[-16:-8]) == {b}  # part of the id
    assert found("") == {a, b, c} and found("nothing-like-this") == set()
    assert {i.run_id for i in store.list(analysis="capture", search="paper")} == {a}


def test_a_store_made_before_labels_gains_them_and_keeps_its_rows(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    run_id = finished(store, "capture", 0)
    with sqlite3.connect(tmp_path / "index.sqlite") as db:  # the index as the first release made it
        db.execute("DROP TABLE labels")
    db.close()
    old = RunStore(tmp_path)
    (info,) = old.list()
    assert (info.run_id, info.status, info.summary, info.label) == (run_id, "finished", {"layer": 0}, Label())
    assert old.label(run_id, name="migrated").label.name == "migrated"
    with sqlite3.connect(tmp_path / "index.sqlite") as db:  # an older version's positional insert still works
        db.execute("INSERT INTO runs VALUES ('capture-0123456789abcdef', 'capture', 'failed', 0, 0, NULL, '{}')")
    db.close()
    assert {i.run_id: i.label.name for i in old.list()} == {run_id: "migrated", "capture-0123456789abcdef": ""}
    old.remove(run_id)  # its label goes with it: a later run of the same config starts unlabelled
    assert finished(old, "capture", 0) == run_id and old.info(run_id).label == Label()


def test_cli_label_list_search_and_show(tmp_path: Path, diag_home: Path, capsys: pytest.CaptureFixture) -> None:
    store = RunStore(diag_home / "runs")
    a, b = finished(store, "capture", 0), finished(store, "capture", 1)
    main(["runs", "label", a, "--name", "lr 3e-4", "--tag", "paper", "--tag", "cpu", "--note", "the good one"])
    assert capsys.readouterr().out.splitlines() == [f"run_id: {a}", "name: lr 3e-4", 'tags: ["paper", "cpu"]',
                                                    "note: the good one"]
    main(["runs", "list", "--search", "GOOD", "--json"])
    (row,) = json.loads(capsys.readouterr().out)["runs"]
    assert row["run_id"] == a and row["label"] == {"name": "lr 3e-4", "tags": ["paper", "cpu"], "note": "the good one"}
    main(["runs", "list"])
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith(a) and '"lr 3e-4" #paper #cpu' in line for line in lines)
    assert any(line.startswith(b) and "#" not in line for line in lines)
    main(["runs", "label", a, "--untag", "cpu", "--note", ""])
    capsys.readouterr()
    main(["runs", "show", a, "--json"])
    assert json.loads(capsys.readouterr().out)["label"] == {"name": "lr 3e-4", "tags": ["paper"]}


def test_cli_bad_tag_exits_2_with_one_line(diag_home: Path, capsys: pytest.CaptureFixture) -> None:
    run_id = finished(RunStore(diag_home / "runs"), "capture", 0)
    with pytest.raises(SystemExit) as exit_info:
        main(["runs", "label", run_id, "--tag", "two words"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: tag 'two words' must be one word") and "\n" not in err


def test_app_lists_labels_and_groups_a_sweeps_runs_together(tmp_path: Path) -> None:
    from apps.pages.runs import runs_frame
    from apps.views import RunPicker

    store = RunStore(tmp_path)
    single_old = finished(store, "capture", 0)
    swept = [finished(store, "capture", layer, group="sweep-a") for layer in (1, 2)]
    single_new = finished(store, "capture", 3)
    store.label(swept[0], name="point one", add_tags=("paper",), note="layer 1")
    frame = runs_frame(store.list())
    assert frame["run"].tolist() == [single_new, *reversed(swept), single_old]  # the sweep's runs together
    assert frame["group"].tolist() == ["", "sweep-a", "sweep-a", ""]
    assert frame.set_index("run")["label"][swept[0]] == "point one\n#paper\nlayer 1"
    options = RunPicker("capture", store).select.options
    assert next(label for label, run_id in options.items() if run_id == swept[0]).endswith(" · point one")
