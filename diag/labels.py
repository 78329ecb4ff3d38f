"""What a person calls a run: a name, tags and a note, kept in the run index only.

A label describes a run without being part of its content, so labelling never touches the run's hashed files, and
stores made before labels (or shared with an older version) keep working unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from diag.errors import DiagError

TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+-]{0,39}")  # one word: listed comma-separated, searched as text
NAME_MAX, NOTE_MAX = 120, 4000


@dataclass(frozen=True)
class Label:
    """What a person calls a run: a short name, tags, and a note (why it was run, what it showed)."""

    name: str = ""
    tags: tuple[str, ...] = ()
    note: str = ""

    def text(self) -> str:
        return " ".join((self.name, *self.tags, self.note))

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tags": list(self.tags), "note": self.note}


def check_label(name: str | None = None, tags: list[str] | tuple[str, ...] = (), note: str | None = None) -> None:
    """Refuse a label the listings could not show on one line (or that search could not tell apart)."""
    if name is not None and (len(name) > NAME_MAX or "\n" in name or "\r" in name):
        raise DiagError(f"a run name is one line of at most {NAME_MAX} characters, got {len(name)} characters")
    for tag in tags:
        if not TAG.fullmatch(tag):
            raise DiagError(f"tag {tag!r} must be one word of letters, digits, '_', '.', ':', '+' or '-' "
                            "(at most 40 characters)")
    if note is not None and len(note) > NOTE_MAX:
        raise DiagError(f"a run note has at most {NOTE_MAX} characters, got {len(note)}")
