"""The run store: one directory per run, atomic writes, a SQLite index, checkpoints for resume.

A run is a pure function of (analysis, config), so its id is content-addressed: asking for the same
config again finds the finished run instead of recomputing it, and a killed run resumes from its last
checkpoint. ``result.json`` is written last and atomically; its presence is what "finished" means on
disk, so a kill at any point leaves either a complete run or no result at all.

Run ids are names, never paths: every id a user gives is checked against ``RUN_ID`` and resolved among the
store's own directories, so no command reads or deletes anything outside the store's root. Just before
``result.json``, ``manifest.json`` records the size and sha256 of every file the run wrote; listing checks
sizes (cheap), loading and ``diag runs verify`` check hashes, and a run that fails either is ``corrupt``.
Runs made before manifests existed are checked by structure instead (JSON parses, ``.npz`` zips open and,
on load, pass their CRCs). An unfinished run records its process (host, boot id, pid, start time), so a run
whose process is gone shows as ``interrupted`` rather than ``running`` forever.

A run's ``Label`` (a name, tags and a free-text note a person gives it) lives in the index only, in its own
table: it describes the run without being part of its content, so labelling never touches the run's hashed
files, and stores made before labels (or shared with an older version) keep working unchanged.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import socket
import sqlite3
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diag.errors import DiagError

RESULT_FILE = "result.json"
CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"
MANIFEST_FILE = "manifest.json"  # size and sha256 of every file a finished run wrote
PROCESS_FILE = "process.json"  # who is computing an unfinished run: host, boot id, pid, process start time
_NOT_RESULTS = {MANIFEST_FILE, CHECKPOINT_FILE, PROCESS_FILE}  # bookkeeping, not part of a run's result

# The one definition of a run id: ANALYSIS-<16 hex digits of the config hash>, with ANALYSIS lower-case.
ANALYSIS_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
RUN_ID = re.compile(r"[a-z0-9][a-z0-9_-]*-[0-9a-f]{16}")

# What `diag runs list --status` can select. The index stores running/finished/failed/cancelled; the others are
# derived when listing: interrupted (its process is gone), corrupt (its files no longer match its manifest).
# A cancelled run (stopped on request, ``diag.progress.Cancelled``) keeps its checkpoint: running it again resumes.
RUN_STATUSES = ("running", "interrupted", "finished", "corrupt", "failed", "cancelled")

log = logging.getLogger("diag.runs")

TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+-]{0,39}")  # one word: listed comma-separated, searched as text
NAME_MAX, NOTE_MAX = 120, 4000


def diag_home() -> Path:
    """``$DIAG_HOME`` or ``~/.cache/diag``: runs, model caches and app state live under it."""
    return Path(os.environ.get("DIAG_HOME", Path.home() / ".cache" / "diag"))


def config_hash(analysis: str, config: dict[str, Any]) -> str:
    """Stable hash of a config (sorted keys) so equal configs map to the same run."""
    canonical = json.dumps({"analysis": analysis, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def run_id_for(analysis: str, config: dict[str, Any]) -> str:
    """The id the store gives the run of ``config``: every place that names a run before it exists uses this."""
    if not ANALYSIS_NAME.fullmatch(analysis):
        raise DiagError(f"analysis name {analysis!r} must be lower-case letters, digits, '-' or '_'")
    return f"{analysis}-{config_hash(analysis, config)}"


def is_run_id(text: Any) -> bool:
    return isinstance(text, str) and RUN_ID.fullmatch(text) is not None


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes_atomic(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(target: Path, obj: Any) -> None:
    write_bytes_atomic(target, json.dumps(obj, indent=2, sort_keys=True, default=_json_default).encode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


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


@dataclass(frozen=True)
class RunInfo:
    """One row of the index: enough to list, filter and open a run.

    ``status`` is one of ``RUN_STATUSES`` as of listing time; ``note`` says why a run is corrupt or interrupted,
    or that a finished run predates manifests and was checked by structure only; ``label`` is what a person
    called it (``diag runs label``).
    """

    run_id: str
    analysis: str
    status: str
    created: float
    updated: float
    group_name: str | None
    summary: dict[str, Any]
    path: Path
    note: str = ""
    label: Label = Label()


class Run:
    """Handle on one run directory. Every write is atomic."""

    def __init__(self, store: RunStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.dir = store.root / run_id
        self._hashes_checked = False

    # -- identity -------------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        return self.read_json(CONFIG_FILE)["config"]

    @property
    def analysis(self) -> str:
        return self.read_json(CONFIG_FILE)["analysis"]

    @property
    def finished(self) -> bool:
        return (self.dir / RESULT_FILE).exists()

    def path(self, name: str) -> Path:
        return self.dir / name

    # -- files ----------------------------------------------------------------------------------
    def write_json(self, name: str, obj: Any) -> Path:
        target = self.dir / name
        write_json_atomic(target, obj)
        return target

    def read_json(self, name: str) -> Any:
        target = self.dir / name
        if not target.exists():
            raise DiagError(f"run {self.run_id} has no {name}")
        try:
            return json.loads(target.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DiagError(f"run {self.run_id} is corrupt: {name} is not valid JSON ({exc})") from exc

    def write_text(self, name: str, text: str) -> Path:
        target = self.dir / name
        write_bytes_atomic(target, text.encode())
        return target

    def write_arrays(self, name: str, arrays: dict[str, Any]) -> Path:
        """Save named arrays (numpy or torch) as ``.npz``, compressed."""
        target = self.dir / (name if name.endswith(".npz") else f"{name}.npz")
        buf = io.BytesIO()
        np.savez_compressed(buf, **{k: _to_numpy(v) for k, v in arrays.items()})
        write_bytes_atomic(target, buf.getvalue())
        return target

    def read_arrays(self, name: str) -> dict[str, np.ndarray]:
        target = self.dir / (name if name.endswith(".npz") else f"{name}.npz")
        if not target.exists():
            raise DiagError(f"run {self.run_id} has no arrays {target.name}")
        try:
            with np.load(target, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (zipfile.BadZipFile, EOFError, ValueError, OSError, zlib.error) as exc:
            raise DiagError(f"run {self.run_id} is corrupt: {target.name} does not load ({exc})") from exc

    def write_figure(self, name: str, fig: Any) -> Path:
        """Save a matplotlib figure as PNG (the report inlines it) and close it."""
        import matplotlib.pyplot as plt

        target = self.dir / "figures" / (name if name.endswith(".png") else f"{name}.png")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        write_bytes_atomic(target, buf.getvalue())
        return target

    def figure_paths(self) -> list[Path]:
        fig_dir = self.dir / "figures"
        return sorted(fig_dir.glob("*.png")) if fig_dir.exists() else []

    # -- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Persist resumable state (tensors, RNG states, step counters) atomically."""
        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        write_bytes_atomic(self.dir / CHECKPOINT_FILE, buf.getvalue())

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The saved state, or None; a checkpoint that no longer loads is dropped so the run starts over."""
        import pickle

        import torch

        target = self.dir / CHECKPOINT_FILE
        if not target.exists():
            return None
        try:
            return torch.load(target, map_location="cpu", weights_only=False)
        except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
            log.warning("run %s: %s does not load (%s); starting from scratch", self.run_id, CHECKPOINT_FILE,
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            target.unlink(missing_ok=True)
            return None

    # -- integrity ------------------------------------------------------------------------------
    def problem(self, *, full: bool) -> str | None:
        """Why this finished run's files cannot be trusted, or None. ``full`` hashes every file (else sizes only);
        a run without a manifest (made before manifests existed) is checked by structure instead."""
        if not (self.dir / MANIFEST_FILE).exists():
            return self._structure_problem(full)
        try:
            files = json.loads((self.dir / MANIFEST_FILE).read_text())["files"]
            files = {str(name): (int(e["size"]), str(e["sha256"])) for name, e in files.items()}
        except (ValueError, KeyError, TypeError, AttributeError):  # JSONDecodeError and UnicodeDecodeError too
            return f"{MANIFEST_FILE} is unreadable"
        for name, (expected_size, sha256) in sorted(files.items()):
            target = self.dir / name
            if not _inside(target, self.dir) or target.is_symlink():
                return f"{name} points outside the run directory"
            if not target.is_file():
                return f"{name} is missing"
            size = target.stat().st_size
            if size != expected_size:
                return f"{name} has {size} bytes, its manifest says {expected_size}"
            if full and _sha256_file(target) != sha256:
                return f"{name} does not match its sha256 in {MANIFEST_FILE}"
        return None

    def _structure_problem(self, full: bool) -> str | None:
        """A run from before manifests: JSON files must parse and ``.npz`` archives open (and pass CRCs if full)."""
        if not (self.dir / RESULT_FILE).is_file():
            return f"{RESULT_FILE} is missing"
        names = _result_files(self.dir)
        for name in names:
            target = self.dir / name
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

    def check(self) -> None:
        """Raise one line naming the damaged file if this finished run's files fail their hashes."""
        if self._hashes_checked or not self.finished:
            return
        problem = self.problem(full=True)
        if problem is not None:
            raise DiagError(f"run {self.run_id} is corrupt: {problem} (run its config again to recompute it, "
                            f"or `diag runs rm {self.run_id}`)")
        self._hashes_checked = True

    # -- lifecycle ------------------------------------------------------------------------------
    def claim(self) -> None:
        """Record this process as the one computing the run (so a dead process reads as ``interrupted``)."""
        write_json_atomic(self.dir / PROCESS_FILE, _this_process())
        self.store._set_status(self.run_id, "running", {})

    def reset(self) -> None:
        """Drop a damaged result (keeping the config and any checkpoint) so the run is computed again."""
        for name in _result_files(self.dir):
            if name != CONFIG_FILE:
                (self.dir / name).unlink()
        (self.dir / MANIFEST_FILE).unlink(missing_ok=True)
        self._hashes_checked = False
        self.claim()

    def finish(self, summary: dict[str, Any]) -> None:
        """Mark the run complete: the manifest, then ``result.json``, then the index, then drop the checkpoint.

        The manifest lists ``result.json``'s bytes before they are written, so a kill between the two leaves an
        unfinished run (no result) that resumes, never a finished run without a manifest.
        """
        result = json.dumps({"summary": summary, "finished": time.time()}, indent=2, sort_keys=True,
                            default=_json_default).encode()
        files = {name: _file_entry(self.dir / name) for name in _result_files(self.dir) if name != RESULT_FILE}
        files[RESULT_FILE] = {"size": len(result), "sha256": hashlib.sha256(result).hexdigest()}
        write_json_atomic(self.dir / MANIFEST_FILE, {"files": files})
        write_bytes_atomic(self.dir / RESULT_FILE, result)
        self.store._set_status(self.run_id, "finished", summary)
        (self.dir / CHECKPOINT_FILE).unlink(missing_ok=True)
        (self.dir / PROCESS_FILE).unlink(missing_ok=True)

    def fail(self, message: str) -> None:
        self.store._set_status(self.run_id, "failed", {"error": message})
        (self.dir / PROCESS_FILE).unlink(missing_ok=True)

    def cancel(self, message: str) -> None:
        """Mark the run stopped on request, keeping its checkpoint (if any) so running its config again resumes."""
        resumes = "resumes from its checkpoint" if (self.dir / CHECKPOINT_FILE).exists() else "starts over"
        self.store._set_status(self.run_id, "cancelled", {"cancelled": f"{message}; running it again {resumes}"})
        (self.dir / PROCESS_FILE).unlink(missing_ok=True)

    def process_problem(self) -> str | None:
        """Why an unfinished run is not running any more (its process is gone), or None while it may be."""
        try:
            owner = json.loads((self.dir / PROCESS_FILE).read_text())
        except FileNotFoundError:
            return "no process is computing it"
        except (json.JSONDecodeError, UnicodeDecodeError):
            return f"{PROCESS_FILE} is unreadable"
        return None if _alive(owner) else f"its process {owner.get('pid')} on {owner.get('host')} is gone"

    @property
    def summary(self) -> dict[str, Any]:
        return self.read_json(RESULT_FILE)["summary"]


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _config_matches(run: Run, analysis: str, config: dict[str, Any]) -> bool:
    try:
        stored = json.loads((run.dir / CONFIG_FILE).read_text())
        same_config = config_hash(analysis, stored["config"]) == config_hash(analysis, config)
        return stored["analysis"] == analysis and same_config
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def _result_files(run_dir: Path) -> list[str]:
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


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_entry(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": _sha256_file(path)}


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _start_time(pid: int) -> int | None:
    """Clock ticks after boot at which process ``pid`` started (Linux), None if unknown or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state is field 3, starttime field 22
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _this_process() -> dict[str, Any]:
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "boot_id": _boot_id(), "start": _start_time(pid),
            "since": time.time()}


def _alive(owner: dict[str, Any]) -> bool:
    """Whether the recorded process still runs. Another host's processes cannot be seen: assumed alive."""
    if owner.get("host") != socket.gethostname():
        return True
    if owner.get("boot_id") != _boot_id():
        return False  # the machine rebooted since
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user
    if owner.get("start") is None:  # no /proc here: the pid is all we know
        return True
    return _start_time(pid) == owner["start"]  # a different start time: the pid was reused


class RunStore:
    """All runs under one root, indexed in SQLite for listing and filtering."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else diag_home() / "runs"
        self.root.mkdir(parents=True, exist_ok=True)
        self._db_path = self.root / "index.sqlite"
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, analysis TEXT, status TEXT,"
                " created REAL, updated REAL, group_name TEXT, summary TEXT)"
            )
            db.execute("CREATE TABLE IF NOT EXISTS labels (run_id TEXT PRIMARY KEY, name TEXT, tags TEXT, note TEXT)")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._db_path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def open(self, analysis: str, config: dict[str, Any], group: str | None = None) -> Run:
        """Return the run for this config, creating its directory and index row if new.

        An unfinished run is claimed by this process (it is about to compute it, or a sweep is about to).
        """
        run_id = run_id_for(analysis, config)
        run = Run(self, run_id)
        if not _config_matches(run, analysis, config):  # new, or a damaged config.json being repaired
            run.dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(run.dir / CONFIG_FILE, {"analysis": analysis, "config": config, **_provenance()})
        now = time.time()
        with self._connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, analysis, "finished" if run.finished else "running", now, now, group, "{}"),
            )
            if group is not None:
                db.execute("UPDATE runs SET group_name=? WHERE run_id=?", (group, run_id))
        if not run.finished:
            run.claim()
        return run

    def get(self, run_id: str, *, verify: bool = True) -> Run:
        """The run named by an id or a unique prefix of one, found only among this store's own run directories.

        With ``verify`` a finished run's files are checked against their hashes, so what is read is what was
        written; ``diag runs rm`` resolves without it, to delete damaged runs.
        """
        run = Run(self, self._resolve(run_id))
        if verify:
            run.check()
        return run

    def _resolve(self, text: str) -> str:
        if not isinstance(text, str) or not ANALYSIS_NAME.fullmatch(text):
            raise DiagError(f"{text!r} is not a run id: ids look like ANALYSIS-0123456789abcdef "
                            "(see `diag runs list`)")
        indexed = self._indexed_ids()
        if is_run_id(text) and (self._is_run_dir(text) or text in indexed):
            return text
        matches = sorted({name for name in self._run_dirs() if name.startswith(text)}
                         | {name for name in indexed if name.startswith(text)})
        if len(matches) > 1:
            raise DiagError(f"run id prefix {text!r} matches {len(matches)} runs: {', '.join(matches[:5])}")
        if not matches:
            raise DiagError(f"no run {text!r} in {self.root} (see `diag runs list`)")
        return matches[0]

    def _is_run_dir(self, name: str) -> bool:
        """A real directory directly under the root with a real config.json: never a symlink out of the store."""
        path = self.root / name
        config = path / CONFIG_FILE
        return (is_run_id(name) and not path.is_symlink() and path.is_dir() and not config.is_symlink()
                and config.is_file() and path.resolve().parent == self.root.resolve())

    def _run_dirs(self) -> list[str]:
        return [p.name for p in self.root.iterdir() if self._is_run_dir(p.name)]

    def _indexed_ids(self) -> set[str]:
        with self._connect() as db:
            return {r[0] for r in db.execute("SELECT run_id FROM runs") if is_run_id(r[0])}

    def list(
        self, analysis: str | None = None, status: str | None = None, group: str | None = None,
        search: str | None = None,
    ) -> list[RunInfo]:
        """Runs newest first, with their status as of now (file sizes checked against manifests, processes
        checked for life); an unknown ``status`` is refused with the choices (the CLI checks ``analysis`` names).

        ``search`` keeps the runs in which every word of it occurs (any case) in the id, analysis, group, name,
        tags or note.
        """
        self._check_filters(status)
        query, args = f"SELECT {_COLUMNS} WHERE 1=1", []
        for column, value in (("analysis", analysis), ("group_name", group)):
            if value is not None:
                query += f" AND {column}=?"
                args.append(value)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY updated DESC", args).fetchall()
        words = (search or "").lower().split()
        rows = [r for r in rows if is_run_id(r[0]) and all(w in _searchable(r) for w in words)]
        infos = [self._info(r) for r in rows]
        return [info for info in infos if status is None or info.status == status]

    def info(self, run_id: str) -> RunInfo:
        """The index row of one run (an id or unique prefix) with its current status."""
        name = self._resolve(run_id)
        with self._connect() as db:
            row = db.execute(f"SELECT {_COLUMNS} WHERE runs.run_id=?", (name,)).fetchone()
            label = db.execute("SELECT name, tags, note FROM labels WHERE run_id=?", (name,)).fetchone()
        if row is None:  # a run directory the index lost: describe it from disk
            row = (name, Run(self, name).analysis, "running", 0.0, 0.0, None, "{}", *(label or (None,) * 3))
        return self._info(row)

    def _info(self, row: tuple[Any, ...]) -> RunInfo:
        run_id, indexed = row[0], row[2]
        run = Run(self, run_id)
        status, note = indexed, ""
        if not self._is_run_dir(run_id):
            status, note = "corrupt", "its run directory is missing (or is not a real directory)"
        elif indexed == "finished" or run.finished:
            note = run.problem(full=False) or ""
            status = "corrupt" if note else "finished"
            if not note and not (run.dir / MANIFEST_FILE).exists():
                note = "made before manifests: checked by structure, not hashes"
        elif indexed not in ("failed", "cancelled"):
            note = run.process_problem() or ""
            status = "interrupted" if note else "running"
        return RunInfo(run_id, row[1], status, row[3], row[4], row[5], json.loads(row[6] or "{}"),
                       self.root / run_id, note, _label(row))

    def label(self, run_id: str, *, name: str | None = None, add_tags: tuple[str, ...] = (),
              remove_tags: tuple[str, ...] = (), note: str | None = None) -> RunInfo:
        """Set a run's name and/or note (``""`` clears), add and remove tags; returns the run's new row.

        Checked before anything is written.
        """
        check_label(name, add_tags, note)
        info = self.info(run_id)
        old = info.label
        tags = tuple(dict.fromkeys(t for t in (*old.tags, *add_tags) if t not in remove_tags))
        new = Label(old.name if name is None else name.strip(), tags, old.note if note is None else note.strip())
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?)",
                       (info.run_id, new.name, json.dumps(list(new.tags)), new.note))
        return self.info(info.run_id)

    def _check_filters(self, status: str | None) -> None:
        if status is not None and status not in RUN_STATUSES:
            raise DiagError(f"unknown status {status!r}: choose one of {', '.join(RUN_STATUSES)}")

    def stored_analyses(self) -> set[str]:
        """The analysis names this store holds runs of."""
        with self._connect() as db:
            return {r[0] for r in db.execute("SELECT DISTINCT analysis FROM runs")}

    def remove(self, run_id: str) -> None:
        """Delete one run of this store (its directory, if any, and its index row)."""
        run = self.get(run_id, verify=False)
        if self._is_run_dir(run.run_id):
            shutil.rmtree(run.dir)
        with self._connect() as db:
            db.execute("DELETE FROM runs WHERE run_id=?", (run.run_id,))
            db.execute("DELETE FROM labels WHERE run_id=?", (run.run_id,))

    def _set_status(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        with self._connect() as db:
            db.execute(
                "UPDATE runs SET status=?, updated=?, summary=? WHERE run_id=?",
                (status, time.time(), json.dumps(summary, default=_json_default), run_id),
            )


# An index row and its label (a run never labelled has NULLs there).
_COLUMNS = ("runs.run_id, analysis, status, created, updated, group_name, summary, labels.name, labels.tags, "
            "labels.note FROM runs LEFT JOIN labels ON labels.run_id = runs.run_id")


def _label(row: tuple[Any, ...]) -> Label:
    try:
        tags = tuple(str(t) for t in json.loads(row[8] or "[]"))
    except (ValueError, TypeError):
        tags = ()
    return Label(row[7] or "", tags, row[9] or "")


def _searchable(row: tuple[Any, ...]) -> str:
    """The text ``RunStore.list(search=...)`` matches: id, analysis, group and label, lower-case."""
    return " ".join((row[0], row[1] or "", row[5] or "", _label(row).text())).lower()


def _provenance() -> dict[str, Any]:
    """Library versions recorded with every run, so numbers can be traced to their software."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for pkg in ("diag", "torch", "transformers", "numpy", "ale-py", "gymnasium", "peft", "captum"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return {"versions": versions, "python": platform.python_version(), "created": time.time()}
