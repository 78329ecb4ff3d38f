"""The run store: one directory per run, a SQLite index, checkpoints for resume.

A run is a pure function of (analysis, config), so its id is content-addressed (``diag.run_ids``): asking for the
same config again finds the finished run instead of recomputing it, and a killed run resumes from its last
checkpoint. Every write is atomic (``diag.atomic``) and ``result.json`` comes last, after the manifest
(``diag.run_files``), so a kill at any point leaves either a complete run or no result at all; a run that fails its
manifest is ``corrupt``, and an unfinished run whose process is gone (``diag.liveness``) is ``interrupted``.

Run ids are names, never paths: every id a user gives is resolved among the store's own directories, so no command
reads or deletes anything outside the store's root. A run's ``Label`` (``diag.labels``) lives in the index only,
in its own table.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diag.atomic import json_default, write_json_atomic
from diag.errors import DiagError
from diag.labels import Label, check_label
from diag.run_dir import Run
from diag.run_files import CONFIG_FILE, MANIFEST_FILE
from diag.run_ids import ANALYSIS_NAME, config_hash, is_run_id, run_id_for

# What `diag runs list --status` can select. The index stores running/finished/failed/cancelled; the others are
# derived when listing: interrupted (its process is gone), corrupt (its files no longer match its manifest).
# A cancelled run (stopped on request, ``diag.progress.Cancelled``) keeps its checkpoint: running it again resumes.
RUN_STATUSES = ("running", "interrupted", "finished", "corrupt", "failed", "cancelled")

def diag_home() -> Path:
    """``$DIAG_HOME`` or ``~/.cache/diag``: runs, model caches and app state live under it."""
    return Path(os.environ.get("DIAG_HOME", Path.home() / ".cache" / "diag"))


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
    label: Label = field(default_factory=Label)


def _config_matches(run: Run, analysis: str, config: dict[str, Any]) -> bool:
    try:
        stored = json.loads((run.dir / CONFIG_FILE).read_text())
        same_config = config_hash(analysis, stored["config"]) == config_hash(analysis, config)
        return stored["analysis"] == analysis and same_config
    except (OSError, ValueError, KeyError, TypeError):
        return False


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
                (status, time.time(), json.dumps(summary, default=json_default), run_id),
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
