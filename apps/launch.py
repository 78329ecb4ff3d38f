"""A "new run" card for any registered analysis: its Config as a form, a button, and the job's progress."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import panel as pn

from apps.forms import ConfigForm
from apps.jobs import JobPanel
from apps.shell import after_load
from diag.config_checks import config_to_dict
from diag.contract import Analysis, run
from diag.errors import DiagError
from diag.run_files import CHECKPOINT_FILE
from diag.run_ids import run_id_for
from diag.runs import RunStore


class Launcher(pn.viewable.Viewer):
    """Runs ``analysis`` on the worker thread and calls ``on_done(run_id)`` when the result is stored."""

    def __init__(self, analysis: Analysis, store: RunStore, on_done: Callable[[str], None], *, title: str,
                 defaults: Any = None, button: str = "Run", **params: Any) -> None:
        super().__init__(**params)
        self.analysis, self.store, self.on_done = analysis, store, on_done
        self._title, self._defaults, self._button = title, defaults, button
        self._view = after_load(lambda: self.card)  # a form of 10-30 widgets, not needed first

    @functools.cached_property
    def card(self) -> pn.Card:
        """The form, its button and the job's progress (built on first use, see ``__init__``)."""
        self.form = ConfigForm(self.analysis.config,
                               self.analysis.audit_config() if self._defaults is None else self._defaults)
        self.button = pn.widgets.Button(name=self._button, button_type="primary", sizing_mode="stretch_width")
        self.job = JobPanel()
        self.button.on_click(self._start)
        return pn.Card(self.form, self.button, self.job, title=self._title, sizing_mode="stretch_width",
                       collapsed=False)

    def __panel__(self) -> Any:
        return self._view

    async def _start(self, _: Any) -> None:
        try:
            config = self.analysis.pin(self.form.config())  # bad input is said here, before the job starts
        except DiagError as exc:
            self.job.show_error(str(exc))
            return
        run_id = run_id_for(self.analysis.name, config_to_dict(config))  # config is pinned above
        checkpoint = self.store.root / run_id / CHECKPOINT_FILE
        # A cancelled or interrupted run of this config resumes from its checkpoint: say so while it runs.
        note = f"resuming `{run_id}` from its checkpoint" if checkpoint.exists() else ""
        self.button.disabled = True
        try:
            outcome = await self.job.run(self.analysis.name, lambda progress: run(
                self.analysis, config, progress=progress, store=self.store), note=note)
        finally:
            self.button.disabled = False
        if outcome is not None:
            self.on_done(run_id)
        elif checkpoint.exists():  # cancelled (or failed) after a checkpoint: the work is kept
            self.job.status.object += f"; `{run_id}` keeps its checkpoint: run it again to resume"
