"""A launch form generated from an analysis' ``Config`` dataclass, so a new analysis needs no form code.

Each field gets a widget by its kind (``diag.fields``, which the CLI's options come from too): choice -> select,
flag -> checkbox, int/float -> numeric input, lists -> comma-separated text, anything else -> text or JSON.
``config()`` goes through ``diag.config_checks.config_from_dict``, so bad input raises
the same ``DiagError`` line the CLI prints.
"""

from __future__ import annotations

import typing
from typing import Any

import panel as pn

from diag.config_checks import config_from_dict, config_to_dict
from diag.fields import FieldSpec, describe, parse_text, show


def _widget(spec: FieldSpec, value: Any) -> pn.widgets.Widget:
    label = spec.label
    if spec.kind == "choice":
        return pn.widgets.Select(name=label, options=list(typing.get_args(spec.inner)), value=value)
    if spec.kind == "flag":
        return pn.widgets.Checkbox(name=label, value=value)
    if spec.kind == "int":
        return pn.widgets.IntInput(name=label, value=value)
    if spec.kind == "float":
        return pn.widgets.FloatInput(name=label, value=value, format="0.[000000]")
    if spec.kind == "list":
        return pn.widgets.TextInput(name=f"{label} (comma-separated)", value=show(spec, value))
    if spec.kind == "text":
        return pn.widgets.TextInput(name=label + (" (optional)" if spec.optional else ""), value=show(spec, value))
    return pn.widgets.TextInput(name=f"{label} (JSON)", value=show(spec, value))


class ConfigForm(pn.viewable.Viewer):
    """Widgets for every field of a Config dataclass, prefilled from ``defaults``.

    Content hashes (``*_sha256``) are filled in when the run starts (``Analysis.pin``), never typed.
    """

    def __init__(self, config_cls: type, defaults: Any, hidden: tuple[str, ...] = (), **params: Any) -> None:
        super().__init__(**params)
        self.config_cls = config_cls
        self._defaults = config_to_dict(defaults)
        self._specs = {spec.name: spec for spec in describe(config_cls) if spec.name not in hidden}
        self.widgets: dict[str, pn.widgets.Widget] = {
            name: _widget(spec, self._defaults[name]) for name, spec in self._specs.items()}
        for widget in self.widgets.values():
            widget.sizing_mode = "stretch_width"
        self._layout = pn.Column(*self.widgets.values(), sizing_mode="stretch_width")

    def __panel__(self) -> pn.Column:
        return self._layout

    def config(self) -> Any:
        """The Config the widgets describe; raises DiagError naming the bad field."""
        values = dict(self._defaults)
        for name, widget in self.widgets.items():
            spec = self._specs[name]
            values[name] = parse_text(spec, widget.value) if isinstance(widget, pn.widgets.TextInput) else widget.value
        return config_from_dict(self.config_cls, values)
