"""What a user sees of a Config's fields: kind, default, help text, and how typed text becomes a value.

The CLI (``diag.commands``) and the app's forms (``apps/forms.py``) are both generated from these descriptions,
so a field reads and parses the same in both. The help text is the field's comment in the Config's source (the
comment lines just above it, and its trailing comment), which is where the code already explains each field.
Torch- and Panel-free: ``diag --help`` builds every command from here.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import re
import sys
import tokenize
import types
import typing
from typing import Any, Literal

from diag.config_checks import Check
from diag.contract import Cli
from diag.errors import DiagError
from diag.files import json_error_reason

Kind = Literal["flag", "int", "float", "choice", "list", "text", "json"]
_ITEMS = (int, float, str, Ellipsis)


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """One user-facing field. ``inner`` is the hint without ``| None``; ``item`` the element type of a list."""

    name: str
    hint: Any
    inner: Any
    optional: bool
    default: Any
    kind: Kind
    item: type | None
    doc: str
    check: Check
    cli: Cli

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")


def describe(config_cls: type) -> list[FieldSpec]:
    """The fields a user sets, in declaration order; ``*_sha256`` fields are filled by ``Analysis.pin``, never typed."""
    hints = typing.get_type_hints(config_cls)
    docs = field_docs(config_cls)
    specs = []
    for f in dataclasses.fields(config_cls):
        if f.name.endswith("_sha256"):
            continue
        inner, optional = _strip_optional(hints[f.name])
        kind, item = _kind(inner, optional)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        specs.append(FieldSpec(f.name, hints[f.name], inner, optional, default, kind, item, docs.get(f.name, ""),
                               f.metadata.get("check", Check()), f.metadata.get("cli", Cli())))
    return specs


def _strip_optional(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def _kind(inner: Any, optional: bool) -> tuple[Kind, type | None]:
    args = typing.get_args(inner)
    if typing.get_origin(inner) is typing.Literal and not optional:
        return "choice", None
    if inner is bool and not optional:
        return "flag", None
    if inner in (int, float) and not optional:
        return ("int" if inner is int else "float"), None
    if typing.get_origin(inner) in (tuple, list) and all(a in _ITEMS for a in args):
        return "list", args[0] if args else str
    if inner in (str, int, float):
        return "text", None
    return "json", None


def show(spec: FieldSpec, value: Any) -> str:
    """A value as a user would type it (lists comma-separated, None as nothing)."""
    if value is None:
        return ""
    if spec.kind == "list":
        return ", ".join(str(v) for v in value)
    if spec.kind == "json":
        return json.dumps(value)
    return str(value)


def parse_text(spec: FieldSpec, text: str, label: str | None = None) -> Any:
    """The value of typed text: comma-separated lists, numbers, JSON; empty text is None for an optional field.

    A malformed value is one ``DiagError`` line naming ``label`` (the form's label, or the CLI's flag).
    """
    label = label or spec.label
    text = text.strip()
    if spec.optional and not text:
        return None
    if spec.kind == "list":
        parts = [p.strip() for p in text.split(",") if p.strip()]
        try:
            return [spec.item(p) for p in parts]  # type: ignore[misc]
        except ValueError as exc:
            raise DiagError(f"{label}: expected comma-separated {spec.item.__name__} values, "  # type: ignore[union-attr]
                            f"got {text!r}") from exc
    if spec.inner is str or spec.kind == "choice":
        return text
    if spec.inner in (int, float):
        try:
            return spec.inner(text)
        except ValueError as exc:
            raise DiagError(f"{label}: expected a number, got {text!r}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DiagError(f"{label}: invalid JSON at column {exc.colno}: {json_error_reason(exc)}") from exc


_FIELD = re.compile(r"( *)(\w+)\s*:")


@functools.cache
def field_docs(config_cls: type) -> dict[str, str]:
    """Each field's comment in the class source: the comment lines just above it, then its trailing comment."""
    module = sys.modules.get(config_cls.__module__)
    path = getattr(module, "__file__", None)
    if path is None:
        return {}
    with open(path, encoding="utf-8") as fh:
        source = fh.read()
    comments = {tok.start[0]: tok.string.lstrip("#").strip() for tok in
                tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    lines = source.splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(rf"class {config_cls.__name__}\b", line)), None)
    if start is None:
        return {}
    docs: dict[str, list[str]] = {}
    pending: list[str] = []
    for number, line in enumerate(lines[start + 1:], start=start + 2):
        stripped = line.strip()
        if stripped.startswith("#") and line.startswith("    ") and not line.startswith("     "):
            pending.append(comments[number])
            continue
        match = _FIELD.match(line)
        if match and len(match.group(1)) == 4 and not stripped.startswith(("def ", "@")):
            docs[match.group(2)] = [*pending, *([comments[number]] if number in comments else [])]
            pending = []
            continue
        if line and not line.startswith(" "):
            break  # the class ended
        if stripped.startswith(("def ", "@", '"""')):
            if stripped.startswith("def "):
                break
            continue
        if stripped:  # a continuation line of a multi-line field
            continue
        pending = []
    return {name: " ".join(parts) for name, parts in docs.items()}
