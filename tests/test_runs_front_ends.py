"""The app and the report refuse a corrupt run with the store's one line naming the damaged file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diag.errors import DiagError
from diag.runs import RunStore


def finished_capture_like_run(store: RunStore, layer: int) -> str:
    """A finished run under a registered analysis name, with an array file, as the analyses write them."""
    run = store.open("capture", {"model": "nowhere", "layers": [layer]})
    run.write_arrays("activations", {"L0": [[1.0, 2.0], [3.0, 4.0]]})
    run.finish({"next_token": " Paris"})
    return run.run_id


def test_report_refuses_a_corrupt_run_naming_the_file(tmp_path: Path) -> None:
    from diag.report.render import build_section

    store = RunStore(tmp_path)
    run_id = finished_capture_like_run(store, 0)
    assert build_section(store.get(run_id)).status == "finished"
    npz = tmp_path / run_id / "activations.npz"
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes
    npz.write_bytes(bytes(data))
    with pytest.raises(DiagError, match=f"run {run_id} is corrupt: activations.npz does not match its sha256"):
        build_section(store.get(run_id, verify=False))


def test_app_picker_marks_corrupt_runs_and_the_view_shows_one_line(tmp_path: Path) -> None:
    import panel as pn

    from apps.pages.runs import headline, runs_frame
    from apps.views import PickedRunView, RunPicker

    store = RunStore(tmp_path)
    good, bad = finished_capture_like_run(store, 0), finished_capture_like_run(store, 1)
    result = tmp_path / bad / "result.json"
    result.write_text(result.read_text()[:20])
    picker = RunPicker("capture", store)
    labels = {run_id: label for label, run_id in picker.select.options.items()}
    assert set(labels) == {good, bad} and labels[bad].endswith("CORRUPT") and "CORRUPT" not in labels[good]

    view = PickedRunView(picker, lambda run_id: [pn.pane.Markdown(json.dumps(store.get(run_id).summary))], "none")
    picker.select.value = bad
    (alert,) = view.view
    assert isinstance(alert, pn.pane.Alert) and alert.object.startswith(f"run {bad} is corrupt: result.json has 20 bytes")
    picker.select.value = good
    assert " Paris" in view.view[0].object

    infos = {i.run_id: i for i in store.list()}
    frame = runs_frame(list(infos.values()))
    assert dict(zip(frame["run"], frame["status"], strict=True)) == {good: "finished", bad: "corrupt"}
    assert headline(infos[bad]).startswith("result.json has 20 bytes")


def test_cdas_page_shows_one_line_for_a_corrupt_newest_run(tmp_path: Path) -> None:
    import panel as pn

    from apps.pages.cdas import toy_view

    store = RunStore(tmp_path)
    run = store.open("cdas-toy", {"seed": 0})
    run.write_json("toy.json", {"mlp_accuracy": 1.0})
    run.finish({"mlp_accuracy": 1.0})
    toy = run.dir / "toy.json"
    toy.write_text(toy.read_text().replace("1.0", "0.5"))  # same size, different numbers
    (alert,) = toy_view(store)
    assert isinstance(alert, pn.pane.Alert) and "toy.json does not match its sha256" in alert.object
