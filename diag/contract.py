"""The contract every analysis follows: one declared ``Analysis`` value, run by ``run(analysis, config)``.

A ``Config`` is a frozen dataclass of JSON-able fields (it is hashed into the run id), checked field by field on
every construction. A ``Result`` knows how to save itself into a run directory, load itself back, summarise
itself as one JSON object (what ``--json`` prints, typed by the analysis' ``summary`` schema) and draw its
figures. ``run`` is the one place that pins a config's inputs and decides between reusing a finished run,
resuming a killed one, and computing a new one.

Adding an analysis: a Config (``@validated`` frozen dataclass, each field commented: the comment is its CLI help)
in a torch-free module, a Result, ``compute(config, run, progress)``, ``audit_config(scale)``, a summary TypedDict
and a ``Guide`` (``GUIDE``), declared as ``ANALYSIS = Analysis(..., module="pkg.mod")`` (the module holding
them; heavy modules are imported only when a run starts) and listed in ``diag.registry`` (or registered from
outside: ``diag.registry.register`` or the ``diag.analyses`` entry-point group). ``diag <command>``, the app's
page and form, ``diag report`` and ``diag audit`` then follow from the declaration; ``comparable`` (optional) adds
its runs to the Runs page's overlays.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from diag.config_checks import OWNERS, Check, check_fields, config_to_dict
from diag.errors import DiagError
from diag.files import fingerprint
from diag.progress import Cancelled, Progress, no_progress

if TYPE_CHECKING:
    from diag.compare import Extracted
    from diag.report.sections import Guide
    from diag.run_dir import Run
    from diag.runs import RunStore

C = TypeVar("C")
R = TypeVar("R", bound="Result")
log = logging.getLogger("diag.contract")


class Result(Protocol):
    def summary(self) -> dict[str, Any]:
        """Headline numbers as one JSON-able dict (what ``--json`` prints)."""
        ...

    def save(self, run: Run) -> None:
        """Write arrays, tables and figures into the run directory (``result.json`` is written by ``run``)."""
        ...

    @classmethod
    def load(cls, run: Run) -> typing.Self:
        """Rebuild the result from a finished run without recomputing anything."""
        ...


# ---- Field declarations: what each Config field accepts (``diag.config_checks`` checks it) ----

MAX_SEED = 2**32 - 1  # numpy's seed range; torch's is wider
# The dtypes a model may run in (a Config field of this type is checked like any Literal; diag.device maps them)
DtypeName = Literal["float32", "bfloat16", "float16"]


@dataclasses.dataclass(frozen=True)
class Cli:
    """How a Config field appears in its generated ``diag`` command when ``--field-name`` is not the spelling.

    ``option``: another flag (``--n`` for ``n_samples``); ``argument``: a positional argument instead, "required"
    (the user must name it, e.g. a model) or "optional" (the field's default when omitted).
    """

    option: str | None = None
    argument: Literal["required", "optional"] | None = None


def checked(default: Any, cli: Cli | None = None, **check: Any) -> Any:
    """A dataclass field with its ``Check`` (and ``Cli`` spelling) as metadata: ``n: int = checked(32, low=1, high=4096)``."""
    return dataclasses.field(default=default, metadata={"check": Check(**check), "cli": cli or Cli()})


def validated(cls: type[C]) -> type[C]:
    """Class decorator (under ``@dataclass``): every construction checks each field first.

    ``Config(...)``, ``config_from_dict`` and ``dataclasses.replace`` all run ``check_fields`` before the
    class's own ``__post_init__``, which is left to checks across fields. So the CLI, ``diag run``, sweeps, the
    app's forms and notebooks refuse the same values with the same line, before any run is opened.
    """
    own = cls.__dict__.get("__post_init__")

    def __post_init__(self: Any) -> None:
        check_fields(self)
        if own is not None:
            own(self)

    cls.__post_init__ = __post_init__  # type: ignore[attr-defined]
    return cls


NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")  # analysis names: lower-case words joined by "-"
Ref = str  # "package.module:attribute": a part imported on first use, so declaring an analysis imports no torch
_LAZY = frozenset({"result", "compute", "summary", "audit_config", "guide", "pin_inputs", "check_inputs",
                   "comparable"})
_IN_MODULE = {"result": "Result", "compute": "compute", "audit_config": "audit_config", "guide": "GUIDE"}


@dataclasses.dataclass(frozen=True, eq=False)
class Analysis:
    """One analysis, declared once; the CLI, the app, the report, the audit and sweeps are generated from it.

    ``config`` is a ``@validated`` frozen dataclass in a torch-free module (the CLI builds ``diag COMMAND``
    from its fields at start-up). The other parts are objects or ``Ref`` strings, imported when first read.
    """

    name: str  # what the run store records; lower-case words joined by "-"
    config: type
    description: str  # one line: what a run computes (``diag COMMAND --help``, the app's page)
    # the module holding ``Result``, ``compute``, ``audit_config`` and ``GUIDE`` by those names (each a Ref into
    # it); a part given below wins
    module: str = ""
    result: type[Result] | Ref | None = None  # save / load / summary / figures of a finished run
    compute: Callable[[Any, Run, Progress], Result] | Ref | None = None  # (config, run, progress) -> result
    audit_config: Callable[[float], Any] | Ref | None = None  # the config ``diag audit --scale S`` runs
    summary: type | Ref | None = None  # the TypedDict ``result.summary()`` returns: every key a front end reads
    guide: Guide | Ref | None = None  # how to read its report section; None: a generic one
    pin_inputs: Callable[[Any], Any] | Ref | None = None  # fingerprints of the local files a config reads, into it
    check_inputs: Callable[[Any], None] | Ref | None = None  # reads them through: bad input fails before any run
    # reads a finished run's quantities the Runs page overlays across runs (``diag.compare``); None: not comparable
    comparable: Callable[[Run], Extracted] | Ref | None = None
    command: tuple[str, ...] = ()  # the CLI path, e.g. ("cdas", "steer"); () means (name,)

    def __post_init__(self) -> None:
        if not NAME.fullmatch(self.name):
            raise DiagError(f"analysis name {self.name!r}: use lower-case words joined by '-'")
        if not dataclasses.is_dataclass(self.config):
            raise DiagError(f"analysis {self.name}: config must be a dataclass, got {self.config!r}")
        object.__setattr__(self, "command", self.command or (self.name,))
        for part, attribute in _IN_MODULE.items():
            if object.__getattribute__(self, part) is None and self.module:
                object.__setattr__(self, part, f"{self.module}:{attribute}")
        missing = [part for part in ("result", "compute", "audit_config") if object.__getattribute__(self, part) is None]
        if missing:
            raise DiagError(f"analysis {self.name}: no {', '.join(missing)} (give them, or the module holding them)")
        OWNERS[self.config] = self.name

    def __getattribute__(self, attr: str) -> Any:
        # A ``Ref`` is looked up on every read, never cached: the module attribute stays the one truth, so a test
        # that wraps ``compute`` (or a reloaded module) is seen, and its undoing too.
        value = object.__getattribute__(self, attr)
        if attr in _LAZY and isinstance(value, str):
            module, _, name = value.partition(":")
            value = getattr(importlib.import_module(module), name)
        return value

    def pin(self, config: Any) -> Any:
        """The config with the local files it reads fingerprinted: the model directory, then the analysis' own
        inputs. The one place a run id's config is made, so every front end names the same run."""
        if not isinstance(config, self.config):
            raise DiagError(f"{self.name}: expected a {self.config.__qualname__}, got {type(config).__name__}")
        if "model_sha256" in {f.name for f in dataclasses.fields(config)}:
            from diag.zoo.sources import resolve_lm_source  # torch-free: a refused run never waits for torch

            source = resolve_lm_source(config.model)  # the embedded model and hub ids are fixed by their name
            # a local directory, or the committed adapter an embedded-adapter model merges in (retrained = new runs)
            sha = fingerprint(Path(source.location)) if source.kind in ("local", "embedded-adapter", "adapter",
                                                                         "gguf-file") else None
            config = dataclasses.replace(config, model_sha256=sha)
        return self.pin_inputs(config) if self.pin_inputs is not None else config

    def check_summary(self, summary: dict[str, Any]) -> None:
        """Refuse a summary with a key the schema does not declare: its readers (pages, guides, scripts reading
        ``--json``) would miss it, or read a key that is gone, without a word."""
        unknown = [key for key in summary if not summary_key_declared(self.summary, key)]
        if unknown:
            raise TypeError(f"{self.name}: summary key(s) {', '.join(map(repr, unknown))} are not declared in "
                            f"{self.summary.__qualname__}; declare them there")


def summary_key_declared(schema: type | None, key: str) -> bool:
    """Whether a summary schema (a TypedDict) declares ``key``: by name, or by a family such as
    ``"iia_{objective}_{variable}"`` whose braces stand for any text. No schema (None) leaves every key open."""
    if schema is None:
        return True
    return any(key == declared or ("{" in declared and _family(declared).fullmatch(key))
               for declared in schema.__annotations__)


@functools.cache
def _family(declared: str) -> re.Pattern[str]:
    return re.compile("".join(".+" if part.startswith("{") else re.escape(part)
                              for part in re.split(r"(\{[^}]*\})", declared) if part))


def run(
    analysis: Analysis,
    config: Any,
    *,
    store: RunStore | None = None,
    progress: Progress = no_progress,
    group: str | None = None,
) -> tuple[str, Any]:
    """Pin the config's inputs, then reuse its finished run or compute it (resuming from its checkpoint); returns
    ``(run_id, result)``.

    ``compute`` may call ``run.save_checkpoint``/``run.load_checkpoint`` to survive kills. Nothing marks the
    run finished until the result has been saved completely. A finished run is reused only if its files match
    their hashes; a corrupt one is said so in one warning line and computed again, which repairs it.
    """
    from diag.runs import RunStore

    config = analysis.pin(config)
    if analysis.check_inputs is not None:
        analysis.check_inputs(config)  # bad input fails here, before a run directory exists
    store = store or RunStore()
    handle = store.open(analysis.name, config_to_dict(config), group=group)
    if handle.finished:
        problem = handle.problem(full=True)
        if problem is None:
            return handle.run_id, analysis.result.load(handle)
        log.warning("run %s is corrupt: %s; computing it again", handle.run_id, problem)
        handle.reset()
    try:
        result = analysis.compute(config, handle, progress)
        summary = result.summary()
        analysis.check_summary(summary)
        result.save(handle)
    except DiagError as exc:
        # Bad input: nothing worth keeping, and no half-written run left behind. A run that checkpointed before
        # stopping is kept (running its config again resumes it) and marked failed, so it never reads as running.
        if handle.load_checkpoint() is None:
            store.remove(handle.run_id)
        else:
            handle.fail(f"{type(exc).__name__}: {exc}")
        raise
    except Cancelled as exc:  # stopped on request: kept with its checkpoint, so running it again resumes
        handle.cancel(str(exc) or "cancelled")
        raise
    except BaseException as exc:
        handle.fail(f"{type(exc).__name__}: {exc}")
        raise
    handle.finish(summary)
    return handle.run_id, result
