"""What a run directory holds, and whether its files are still what the run wrote.

``result.json`` is written last and atomically; its presence is what "finished" means on disk. Just before it,
``manifest.json`` records the size and sha256 of every file the run wrote; listing checks sizes (cheap), loading
and ``diag runs verify`` check hashes. Runs made before manifests existed are checked by structure instead (JSON
parses, ``.npz`` zips open and, on load, pass their CRCs).
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

from diag.atomic import write_json_atomic

RESULT_FILE = "result.json"
CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"
MANIFEST_FILE = "manifest.json"  # size and sha256 of every file a finished run wrote
PROCESS_FILE = "process.json"  # who is computing an unfinished run: host, boot id, pid, process start time
_NOT_RESULTS = {MANIFEST_FILE, CHECKPOINT_FILE, PROCESS_FILE}  # bookkeeping, not part of a run's result


def result_files(run_dir: Path) -> list[str]:
    """Relative names of the regular files a run wrote (not its bookkeeping, temp files or symlinks)."""
    names = []
    for parent, dirs, files in os.walk(run_dir):  # does not follow symlinked directories
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for file in files:
            path = Path(parent) / file
            name = path.relative_to(run_dir).as_posix()
            if not file.startswith(".") and name not in _NOT_RESULTS and not path.is_symlink():
                names.append(name)
    return sorted(names)


def write_manifest(run_dir: Path, result: bytes) -> None:
    """Record every file the run wrote, and ``result`` (the bytes ``result.json`` is about to hold)."""
    files = {name: _file_entry(run_dir / name) for name in result_files(run_dir) if name != RESULT_FILE}
    files[RESULT_FILE] = {"size": len(result), "sha256": hashlib.sha256(result).hexdigest()}
    write_json_atomic(run_dir / MANIFEST_FILE, {"files": files})


def files_problem(run_dir: Path, *, full: bool, only: frozenset[str] | None = None) -> str | None:
    """Why a finished run's files cannot be trusted, or None. ``full`` hashes every file (else sizes only), or
    with ``only`` just those names (a figure served alone need not hash the run's arrays); a run without a
    manifest (made before manifests existed) is checked by structure instead."""
    if not (run_dir / MANIFEST_FILE).exists():
        return _structure_problem(run_dir, full)
    try:
        files = json.loads((run_dir / MANIFEST_FILE).read_text())["files"]
        files = {str(name): (int(e["size"]), str(e["sha256"])) for name, e in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError):  # JSONDecodeError and UnicodeDecodeError too
        return f"{MANIFEST_FILE} is unreadable"
    for name, (expected_size, sha256) in sorted(files.items()):
        target = run_dir / name
        if not _inside(target, run_dir) or target.is_symlink():
            return f"{name} points outside the run directory"
        if not target.is_file():
            return f"{name} is missing"
        size = target.stat().st_size
        if size != expected_size:
            return f"{name} has {size} bytes, its manifest says {expected_size}"
        if full and (only is None or name in only) and _sha256_file(target) != sha256:
            return f"{name} does not match its sha256 in {MANIFEST_FILE}"
    return None


def _structure_problem(run_dir: Path, full: bool) -> str | None:
    """A run from before manifests: JSON files must parse and ``.npz`` archives open (and pass CRCs if full)."""
    if not (run_dir / RESULT_FILE).is_file():
        return f"{RESULT_FILE} is missing"
    for name in result_files(run_dir):
        target = run_dir / name
        if name.endswith(".json") and (full or name in (RESULT_FILE, CONFIG_FILE)):
            try:
                json.loads(target.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                return f"{name} is not valid JSON"
        elif name.endswith(".npz"):
            try:
                with zipfile.ZipFile(target) as archive:
                    bad = archive.testzip() if full else None
            except (zipfile.BadZipFile, EOFError, OSError, zlib.error):
                return f"{name} is not a readable .npz archive"
            if bad is not None:
                return f"{name}: {bad} fails its CRC check"
    return None


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_entry(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": _sha256_file(path)}
