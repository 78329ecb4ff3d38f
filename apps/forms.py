"""A launch form generated from an analysis' ``Config`` dataclass, so a new analysis needs no form code.

Each field gets a widget by its type hint (Literal -> select, bool -> checkbox, int/float -> numeric input,
tuples -> comma-separated text, anything else -> text or JSON). ``config()`` goes through
``diag.contract.config_from_dict``, so bad input raises the same ``DiagError`` line the CLI prints.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

import panel as pn

from diag.contract import config_from_dict, config_to_dict
from diag.errors import DiagError
from diag.files import json_error_reason


def _label(name: str) -> str:
    return name.replace("_", " ")


def _strip_optional(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def _is_sequence(hint: Any) -> bool:
    return typing.get_origin(hint) in (tuple, list)


def _widget(name: str, hint: Any, value: Any) -> pn.widgets.Widget:
    inner, optional = _strip_optional(hint)
    label = _label(name)
    if typing.get_origin(inner) is typing.Literal and not optional:
        return pn.widgets.Select(name=label, options=list(typing.get_args(inner)), value=value)
    if inner is bool and not optional:
        return pn.widgets.Checkbox(name=label, value=value)
    if inner is int and not optional:
        return pn.widgets.IntInput(name=label, value=value)
    if inner is float and not optional:
        return pn.widgets.FloatInput(name=label, value=value, format="0.[000000]")
    if _is_sequence(inner) and all(a in (int, float, str, Ellipsis) for a in typing.get_args(inner)):
        text = ", ".join(str(v) for v in value) if value is not None else ""
        return pn.widgets.TextInput(name=f"{label} (comma-separated)", value=text)
    if inner in (str, int, float):
        text = "" if value is None else str(value)
        return pn.widgets.TextInput(name=label + (" (optional)" if optional else ""), value=text)
    return pn.widgets.TextInput(name=f"{label} (JSON)", value=json.dumps(value))


def _parse(name: str, hint: Any, widget: pn.widgets.Widget) -> Any:
    inner, optional = _strip_optional(hint)
    value = widget.value
    if not isinstance(widget, pn.widgets.TextInput):
        return value
    text = value.strip()
    if optional and not text:
        return None
    if _is_sequence(inner) and all(a in (int, float, str, Ellipsis) for a in typing.get_args(inner)):
        item = typing.get_args(inner)[0] if typing.get_args(inner) else str
        parts = [p.strip() for p in text.split(",") if p.strip()]
        try:
            return [item(p) for p in parts]
        except ValueError as exc:
            raise DiagError(f"{_label(name)}: expected comma-separated {item.__name__} values, got {text!r}") from exc
    if inner is str:
        return text
    if inner in (int, float):
        try:
            return inner(text)
        except ValueError as exc:
            raise DiagError(f"{_label(name)}: expected a number, got {text!r}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DiagError(f"{_label(name)}: invalid JSON at column {exc.colno}: {json_error_reason(exc)}") from exc


class ConfigForm(pn.viewable.Viewer):
    """Widgets for every field of a Config dataclass, prefilled from ``defaults``.

    Content hashes (``*_sha256``) are filled in when the run starts (``diag.contract.pinned``), never typed.
    """

    def __init__(self, config_cls: type, defaults: Any, hidden: tuple[str, ...] = (), **params: Any) -> None:
        super().__init__(**params)
        self.config_cls = config_cls
        self._hints = typing.get_type_hints(config_cls)
        self._defaults = config_to_dict(defaults)
        self.widgets: dict[str, pn.widgets.Widget] = {
            f.name: _widget(f.name, self._hints[f.name], self._defaults[f.name])
            for f in dataclasses.fields(config_cls) if f.name not in hidden and not f.name.endswith("_sha256")
        }
        for widget in self.widgets.values():
            widget.sizing_mode = "stretch_width"
        self._layout = pn.Column(*self.widgets.values(), sizing_mode="stretch_width")

    def __panel__(self) -> pn.Column:
        return self._layout

    def config(self) -> Any:
        """The Config the widgets describe; raises DiagError naming the bad field."""
        values = dict(self._defaults)
        for name, widget in self.widgets.items():
            values[name] = _parse(name, self._hints[name], widget)
        return config_from_dict(self.config_cls, values)
