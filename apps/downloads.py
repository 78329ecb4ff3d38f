"""Download buttons for one stored run: its tables (CSV, JSON), arrays (NPZ) and the whole export (ZIP).

The bytes are ``diag.export``'s, the same as ``diag runs export`` writes. The card opens collapsed and reads the
run's files only when first expanded, so pages render as fast without it.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import panel as pn

from diag import export
from diag.errors import DiagError
from diag.runs import RunStore


def _button(label: str, filename: str, make: Callable[[], bytes]) -> pn.widgets.FileDownload:
    return pn.widgets.FileDownload(label=label, filename=filename, callback=lambda: io.BytesIO(make()),
                                   button_type="default", embed=False, width=150)


class Downloads(pn.viewable.Viewer):
    """A collapsed "Downloads" card for ``run_id``."""

    def __init__(self, store: RunStore, run_id: str, **params: Any) -> None:
        super().__init__(**params)
        self.store, self.run_id = store, run_id
        self._built = False
        self.card = pn.Card(pn.pane.Markdown("_Reading the run's files..._"), title="Downloads: tables, arrays, "
                            "everything", collapsed=True, sizing_mode="stretch_width", css_classes=["downloads"])
        self.card.param.watch(self._open, "collapsed")

    def __panel__(self) -> pn.Card:
        return self.card

    def _open(self, event: Any) -> None:
        if event.new or self._built:
            return
        self._built = True
        try:
            self.card[:] = self._widgets()
        except DiagError as exc:  # a run corrupted since it was shown: the store's one line
            self.card[:] = [pn.pane.Alert(str(exc), alert_type="danger")]

    def _widgets(self) -> list[Any]:
        run = self.store.get(self.run_id)
        tables, arrays = export.tables(run), export.arrays(run)
        items: list[Any] = []
        if tables:
            pick = pn.widgets.Select(name="Table", options=sorted(tables), width=320)
            csv = _button("CSV", "", lambda: export.table_csv(tables[pick.value]))
            json_ = _button("JSON", "", lambda: export.table_json(tables[pick.value]))

            def rename(*_: Any) -> None:
                csv.filename = f"{self.run_id}.{pick.value}.csv"
                json_.filename = f"{self.run_id}.{pick.value}.json"

            pick.param.watch(rename, "value")
            rename()
            items.append(pn.Row(pick, csv, json_, css_classes=["download-tables"]))
        if arrays:
            pick_arrays = pn.widgets.Select(name="Arrays", options=sorted(arrays), width=320)
            npz = _button("NPZ", "", lambda: export.arrays_npz(arrays[pick_arrays.value]))
            pick_arrays.param.watch(lambda e: setattr(npz, "filename", f"{self.run_id}.{e.new}.npz"), "value")
            npz.filename = f"{self.run_id}.{pick_arrays.value}.npz"
            items.append(pn.Row(pick_arrays, npz, css_classes=["download-arrays"]))
        items.append(pn.Row(
            _button("Everything (ZIP)", f"{self.run_id}.zip",
                    lambda: export.export_zip(self.store.get(self.run_id), self.store)),
            pn.pane.Markdown("tables, arrays (NPZ, and CSV where 1-D/2-D), figures (PNG, SVG) and the summary: "
                             f"what `diag runs export {self.run_id}` writes", margin=(0, 10))))
        return items
