"""Files a user hands us: checked to be UTF-8 text before they are parsed, and fingerprinted for run ids.

Every problem is one ``DiagError`` line naming the file (and the line, for JSONL). A leaf module: the config
checks (``diag.contract``), the zoo and the analyses all read files through it.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from pathlib import Path
from typing import Any

from diag.errors import DiagError

_TEXT_SNIFF = 1 << 16  # bytes read to tell a text file from a binary one


def check_text_file(path: Path, what: str, hint: str = "") -> None:
    """One line unless ``path`` is an existing UTF-8 text file: missing, a directory, special or binary."""
    if not path.exists():
        raise DiagError(f"{what} does not exist{hint}")
    if path.is_dir():
        raise DiagError(f"{what} is a directory, not a file{hint}")
    if not path.is_file():
        raise DiagError(f"{what} is not a regular file{hint}")
    with open(path, "rb") as fh:
        head = fh.read(_TEXT_SNIFF)
    nul = head.find(b"\0")
    if nul >= 0:  # valid UTF-8, but no text file holds NUL bytes
        raise DiagError(f"{what} is not a UTF-8 text file (binary data at byte {nul})")
    try:
        # a full sniff may end inside a character: only a complete file must decode to its last byte
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < _TEXT_SNIFF)
    except UnicodeDecodeError as exc:
        line = head.count(b"\n", 0, exc.start) + 1
        raise DiagError(f"{what} is not a UTF-8 text file (line {line}, byte 0x{head[exc.start]:02x}); "
                        "save it as UTF-8") from exc


def read_json_file(path: Path, what: str) -> Any:
    """Parse a JSON file a user wrote; a missing, binary or malformed file is one line saying where."""
    path = Path(path)
    check_text_file(path, f"{what} {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise DiagError(f"{what} {path} is not a UTF-8 text file (binary data at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise DiagError(f"{what} {path}: invalid JSON at line {exc.lineno}, column {exc.colno}: "
                        f"{json_error_reason(exc)}") from exc


def json_error_reason(exc: json.JSONDecodeError) -> str:
    """json's message without its dangling position words ("Invalid control character at")."""
    return exc.msg.removesuffix(" at").removesuffix(" starting")


_HASHED_FILE_LIMIT = 1 << 30  # bigger files (full model weights, a GGUF) count by size and mtime


def fingerprint(path: Path) -> str:
    """sha256 of a file's bytes, or over a directory's files (relative names and bytes, hidden files skipped);
    files over 1 GiB count by name, size and mtime (hashing a 4 GB checkpoint per run would cost seconds).

    Analyses put it in their config for the local files they read (checkpoints, adapters, models, data), so a
    replaced file gives a new run id instead of silently reusing a run made from the old one.
    """
    path = Path(path)
    if path.is_file():
        stat = path.stat()
        if stat.st_size > _HASHED_FILE_LIMIT:  # a multi-GB GGUF: by size and mtime, as inside directories
            return hashlib.sha256(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
        return _hash_into(hashlib.sha256(), path).hexdigest()
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        relative = file.relative_to(path)
        if any(part.startswith(".") for part in relative.parts):
            continue
        digest.update(str(relative).encode() + b"\0")
        stat = file.stat()
        if stat.st_size > _HASHED_FILE_LIMIT:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        else:
            _hash_into(digest, file)
    return digest.hexdigest()


def _hash_into(digest: Any, file: Path) -> Any:
    with open(file, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest


def _json_array(path: Path) -> list[tuple[int, dict[str, Any]]] | None:
    """(item number, object) of a file that is one JSON array of objects; None for anything else (JSONL)."""
    with open(path, encoding="utf-8") as fh:
        head = fh.read(4096).lstrip()
    if not head.startswith("["):
        return None
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None  # not one array after all: the line reader names the bad line
    if not isinstance(items, list):
        return None
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise DiagError(f"{path}:{number}: expected a JSON object as array item {number}, "
                            f"got {type(item).__name__}")
    if not items:
        raise DiagError(f"{path} is an empty JSON array")
    return list(enumerate(items, start=1))


def read_json_lines(path: Path, what: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file a user wrote, all or nothing.

    The first bad line raises ``DiagError`` as ``PATH:LINE: problem``, so callers that validate fields use the
    same prefix and an import never stops half-way. A file holding one JSON array of objects (``json.dump`` of a
    list, ``Dataset.to_json(lines=False)``) is read too, its items numbered from 1 in place of lines.
    """
    path = Path(path)
    check_text_file(path, f"{what} {path}")
    array = _json_array(path)
    if array is not None:
        return array
    records = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DiagError(f"{path}:{number}: invalid JSON at column {exc.colno}: "
                                f"{json_error_reason(exc)}") from exc
            if not isinstance(record, dict):
                raise DiagError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            records.append((number, record))
    if not records:
        raise DiagError(f"{what} {path} is empty")
    return records


# OpenAI content parts that carry text: chat completions ("text") and the Responses API (output_text, input_text)
TEXT_PARTS = ("text", "output_text", "input_text")


def message_text(where: str, content: Any) -> str:
    """A chat message's text: a string, null (a turn that only calls tools), or OpenAI content parts, whose text
    parts are joined and others (images, audio, refusals) left out; anything else is one line naming ``where``."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(part, dict) for part in content):
        return "".join(str(part.get("text", "")) for part in content
                       if part.get("type", "text") in TEXT_PARTS and isinstance(part.get("text", ""), str))
    raise DiagError(f"{where}: message content must be a string, null or a list of parts, got "
                    f"{json.dumps(content)[:60]}")

