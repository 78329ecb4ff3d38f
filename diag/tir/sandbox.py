"""Run untrusted, model-written Python: bubblewrap isolation, a fresh kernel-object world per program, limits
over each program's whole process tree, and a pool of warm workers.

Isolation (``bwrap`` mode): each worker is ``python -I -S`` inside bubblewrap with new PID, network, IPC, UTS
and cgroup namespaces (no network at all, not even loopback), a read-only view of ``/usr`` and the Python
install only (no home, no project files, no ``/etc``), an empty environment, ``--die-with-parent`` and
``--new-session``. The worker is the PID namespace's init, which programs cannot kill. Each program runs in a
forked child that first gets its own IPC and mount namespaces, one fresh size-capped tmpfs as ``/tmp`` (its work
directory) and ``/dev/shm``, a read-only ``/dev`` and small IPC quotas, then rlimits, an empty capability
bounding set, ``no_new_privs`` and a seccomp filter (no new namespaces, mounts, keyrings, ptrace, bpf,
io_uring). The worker watches the program's whole process tree (memory as summed PSS, CPU seconds, process
count) and SIGKILLs everything in the namespace when the program ends. The guarantees and their mechanisms are
tabled in the README (TIR part).

Two bubblewrap modes: as root (``root_mode``) each worker's programs run under their own unprivileged uid and
the worker keeps only the capabilities it needs; otherwise bubblewrap also unshares the user namespace, with
nested user namespaces disabled. Without bubblewrap (``rlimits`` mode) only per-process rlimits, the wall
clock, a clean environment, seccomp and a private working directory remain; every result then carries
``WEAK_ISOLATION_WARNING``.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import typing
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

from diag.errors import DiagError

Status = Literal["ok", "error", "timeout", "killed", "output_truncated", "infra_error"]
STATUSES: tuple[str, ...] = typing.get_args(Status)
Isolation = Literal["bwrap", "rlimits"]

WEAK_ISOLATION_WARNING = (
    "WARNING: bubblewrap is unavailable, programs ran with rlimits only: no filesystem, network, IPC or "
    "process isolation, and memory, CPU and process limits hold per process, not per program. Do not run "
    "untrusted code this way."
)
TREE_LIMITS_WARNING = (
    "sandbox: memory, CPU and process limits over a program's whole process tree are enforced by the worker's "
    "10 ms watchdog (summed PSS, CPU seconds, process count), not by cgroups: a fork-and-allocate burst can "
    "overshoot memory_bytes for up to one interval before the whole tree is killed."
)
NO_SECCOMP_WARNING = ("WARNING: no seccomp filter for this CPU architecture: programs may create namespaces "
                      "(rlimits mode) and use keyrings, ptrace, bpf and io_uring.")
_WORKER_SOURCE = (Path(__file__).parent / "_worker.py").read_text()
_UID_BASE = 60000  # root mode: worker i runs its programs as uid/gid _UID_BASE + i


@dataclass(frozen=True)
class Limits:
    """Per-program limits. Wall clock is enforced by the worker; the host adds a grace period on top."""

    wall_s: float = 5.0
    cpu_s: int = 5
    memory_bytes: int = 512 * 2**20
    processes: int = 32
    file_bytes: int = 16 * 2**20
    open_files: int = 64
    max_output_bytes: int = 64 * 2**10
    tmp_bytes: int = 64 * 2**20

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value <= 0:
                raise DiagError(f"sandbox limit {name} must be positive, got {value}")


@dataclass
class ExecResult:
    """What happened to one program. ``infra`` marks failures of the sandbox, not of the program."""

    status: Status
    exit_code: int | None = None
    signal: int | None = None
    stdout: str = ""
    stderr: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    isolation: Isolation = "bwrap"
    warning: str | None = None

    @property
    def infra(self) -> bool:
        return self.status == "infra_error"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bwrap_available() -> tuple[bool, str]:
    """Whether bubblewrap exists and can build our namespace set here (and if not, why)."""
    if shutil.which("bwrap") is None:
        return False, "bwrap not found on PATH"
    argv = _bwrap_argv(Limits(), root_mode=os.geteuid() == 0) + ["/bin/true" if Path("/bin/true").exists()
                                                                 else "/usr/bin/true"]
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"bwrap failed to start: {exc}"
    if proc.returncode != 0:
        return False, f"bwrap refused our flags: {proc.stderr.decode(errors='replace').strip()[:300]}"
    return True, ""


def _python_paths() -> tuple[str, list[str]]:
    """The base interpreter (not a venv wrapper) and the directories it needs outside /usr."""
    prefix = Path(sys.base_prefix).resolve()
    exe = prefix / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    if not exe.exists():
        exe = Path(sys.executable).resolve()
    mounts = [] if str(prefix).startswith("/usr/") or str(prefix) == "/usr" else [str(prefix)]
    return str(exe), mounts


def _bwrap_argv(limits: Limits, root_mode: bool, worker: bool = True) -> list[str]:
    """bubblewrap flags for a worker (the capabilities it needs to build program worlds) or, ``worker=False``,
    for a bare capability-free process (the benchmark's baseline)."""
    argv = ["bwrap", "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        path = Path(top)
        if path.is_symlink():
            argv += ["--symlink", os.readlink(path), top]
        elif path.is_dir():
            argv += ["--ro-bind", top, top]
    _, mounts = _python_paths()
    for mount in mounts:
        # bwrap would create the parents (e.g. /root of a pyenv install) 0700, hiding Python from the
        # unprivileged program uid: create them world-traversable first.
        for parent in reversed(Path(mount).parents[:-1]):
            argv += ["--perms", "0755", "--dir", str(parent)]
        argv += ["--ro-bind", mount, mount]
    argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp",
             "--remount-ro", "/", "--chdir", "/tmp", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin",
             "--die-with-parent", "--new-session", "--as-pid-1",
             "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    # The worker builds each program's namespaces and mounts (SYS_ADMIN), empties its bounding set (SETPCAP) and
    # reads its processes' PSS (SYS_PTRACE); the program itself gets none of them.
    caps = ["SYS_ADMIN", "SETPCAP", "SYS_PTRACE"] if worker else []
    if root_mode and worker:
        caps += ["SETUID", "SETGID", "CHOWN", "KILL", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER"]
    else:
        # uid 0 inside owns the per-program IPC namespaces' quota files; nested user namespaces are refused.
        argv += ["--unshare-user", "--uid", "0", "--gid", "0", "--disable-userns"]
    argv += ["--cap-drop", "ALL"]
    for cap in caps:
        argv += ["--cap-add", f"CAP_{cap}"]
    return argv


def _user_process_count() -> int:
    """Processes of our uid on the host: RLIMIT_NPROC counts them too when programs keep our uid."""
    uid, count = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                count += os.stat(f"/proc/{entry}").st_uid == uid
            except OSError:
                continue
    return count


class _Worker:
    """One warm sandboxed interpreter, speaking one JSON line per request and per reply."""

    def __init__(self, index: int, isolation: Isolation, limits: Limits, root_mode: bool) -> None:
        self.isolation = isolation
        exe, _ = _python_paths()
        if isolation == "bwrap":
            settings = {"isolate": True, "uid": _UID_BASE + index if root_mode else None,
                        "limits": asdict(limits)}
            argv = _bwrap_argv(limits, root_mode=root_mode)
            cwd = None
        else:
            self._tmp = tempfile.mkdtemp(prefix="diag-tir-")
            settings = {"isolate": False, "uid": None, "tmp": self._tmp, "limits": asdict(limits)}
            argv, cwd = [], self._tmp
        argv += [exe, "-I", "-S", "-c", _WORKER_SOURCE, json.dumps(settings)]
        env = {"PATH": "/usr/bin:/bin"} if isolation == "rlimits" else None
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True, cwd=cwd, env=env)
        self._buf = b""
        hello = self._read_line(time.monotonic() + 30)
        if hello is None or not hello.get("ready"):
            detail = self._stderr_tail()
            self.close()
            raise RuntimeError(f"sandbox worker failed to start: {detail or 'no greeting'}")
        self.seccomp = bool(hello.get("seccomp"))

    def _read_line(self, deadline: float) -> dict[str, Any] | None:
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def _stderr_tail(self) -> str:
        fd = self.proc.stderr.fileno()  # type: ignore[union-attr]
        data = b""
        while select.select([fd], [], [], 0.2)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
        return data.decode(errors="replace").strip()[-500:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, code: str, wall_s: float) -> dict[str, Any]:
        """Run one program under the worker's limits (the pool's) and its own wall clock."""
        request = json.dumps({"code": code, "wall_s": wall_s}).encode() + b"\n"
        try:
            self.proc.stdin.write(request)  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except (BrokenPipeError, OSError) as exc:
            return {"status": "infra_error", "stderr": f"sandbox worker unreachable: {exc}"}
        # The worker enforces wall_s itself; the grace covers killing, reaping and cleaning up.
        reply = self._read_line(time.monotonic() + wall_s + 10)
        if reply is None:
            alive, tail = self.alive(), self._stderr_tail()
            self.close()
            what = "stopped answering" if alive else f"died (exit {self.proc.returncode})"
            return {"status": "infra_error", "stderr": f"sandbox worker {what}: {tail}"}
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        if self.isolation == "rlimits":
            with contextlib.suppress(RecursionError):  # a program's directories nested past the stack: left behind
                shutil.rmtree(self._tmp, ignore_errors=True)


@dataclass
class SandboxStats:
    """Counts the audit needs: programs run, infrastructure failures, workers replaced."""

    programs: int = 0
    infra_errors: int = 0
    workers_started: int = 0
    workers_replaced: int = 0
    by_status: dict[str, int] = field(default_factory=dict)


class Sandbox:
    """A pool of warm sandboxed workers. Thread-safe; ``run_many`` runs programs in parallel.

    ``isolation="auto"`` uses bubblewrap when it works here and falls back to rlimits-only otherwise
    (with ``WEAK_ISOLATION_WARNING`` in every result); ``"bwrap"`` insists on it. ``root_mode`` (default: when
    we are root) gives each worker's programs their own uid; ``False`` runs the user-namespace configuration
    that non-root hosts get, which lets a root machine test it.
    """

    def __init__(self, workers: int = 2, limits: Limits | None = None,
                 isolation: Literal["auto", "bwrap", "rlimits"] = "auto", root_mode: bool | None = None) -> None:
        if workers < 1:
            raise DiagError(f"sandbox needs at least one worker, got {workers}")
        if root_mode and os.geteuid() != 0:
            raise DiagError("sandbox root_mode needs root (programs get their own uids)")
        self.limits = limits or Limits()
        self.root_mode = os.geteuid() == 0 if root_mode is None else root_mode
        ok, why = bwrap_available() if isolation != "rlimits" else (False, "rlimits mode requested")
        if isolation == "bwrap" and not ok:
            raise DiagError(f"bubblewrap isolation requested but unusable: {why}")
        self.isolation: Isolation = "bwrap" if ok else "rlimits"
        self.warning = None if ok else f"{WEAK_ISOLATION_WARNING} ({why})"
        if self.isolation == "rlimits" or not self.root_mode:
            # Programs keep our uid, so RLIMIT_NPROC must leave room for the processes we already own.
            self.limits = Limits(**{**asdict(self.limits),
                                    "processes": self.limits.processes + _user_process_count()})
        self.stats = SandboxStats()
        self._lock = threading.Lock()
        self._idle: queue.Queue[int] = queue.Queue()
        self._workers: list[_Worker | None] = [None] * workers
        self._closed = False
        # bubblewrap's --die-with-parent follows the *thread* that started it: workers are started from this
        # one long-lived thread, never from run_many's short-lived ones (their exit would SIGKILL the worker).
        self._starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-starter")
        for i in range(workers):
            self._workers[i] = self._spawn(i)
            self._idle.put(i)
        if self.isolation == "bwrap":
            warnings.warn(TREE_LIMITS_WARNING, RuntimeWarning, stacklevel=2)  # shown once per call site
        if any(w is not None and not w.seccomp for w in self._workers):
            self.warning = NO_SECCOMP_WARNING if self.warning is None else f"{self.warning} {NO_SECCOMP_WARNING}"

    def _spawn(self, index: int) -> _Worker | None:
        try:
            worker = self._starter.submit(_Worker, index, self.isolation, self.limits, self.root_mode).result()
        except (RuntimeError, OSError):
            return None
        with self._lock:
            self.stats.workers_started += 1
        return worker

    def _retire(self, index: int) -> None:
        """Close a dead or failed worker and count it replaced; a fresh one starts on the slot's next use."""
        worker = self._workers[index]
        if worker is not None:
            worker.close()
            self._workers[index] = None
            with self._lock:
                self.stats.workers_replaced += 1

    def run(self, code: str, wall_s: float | None = None) -> ExecResult:
        """Run one program; never raises for anything the program does."""
        if self._closed:
            raise DiagError("sandbox is closed")
        if wall_s is not None and wall_s <= 0:
            raise DiagError(f"sandbox limit wall_s must be positive, got {wall_s}")
        index = self._idle.get()
        try:
            worker = self._workers[index]
            if worker is not None and not worker.alive():
                self._retire(index)
                worker = None
            if worker is None:
                worker = self._workers[index] = self._spawn(index)
            if worker is None:
                reply: dict[str, Any] = {"status": "infra_error", "stderr": "sandbox worker could not start"}
            else:
                reply = worker.run(code, self.limits.wall_s if wall_s is None else wall_s)
                if reply["status"] == "infra_error" or not worker.alive():
                    self._retire(index)
        finally:
            self._idle.put(index)
        result = ExecResult(**{k: v for k, v in reply.items() if k in ExecResult.__dataclass_fields__},
                            isolation=self.isolation, warning=self.warning)
        with self._lock:
            self.stats.programs += 1
            self.stats.infra_errors += result.infra
            self.stats.by_status[result.status] = self.stats.by_status.get(result.status, 0) + 1
        return result

    def run_many(self, codes: Iterable[str], wall_s: float | None = None) -> list[ExecResult]:
        """Run programs in parallel across the pool, results in input order."""
        codes = list(codes)
        with ThreadPoolExecutor(max_workers=len(self._workers)) as ex:
            return list(ex.map(lambda c: self.run(c, wall_s), codes))

    def worker_pids(self) -> list[int | None]:
        return [w.proc.pid if w is not None and w.alive() else None for w in self._workers]

    def close(self) -> None:
        self._closed = True
        for worker in self._workers:
            if worker is not None:
                worker.close()
        self._starter.shutdown()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_fresh(code: str, limits: Limits | None = None, isolation: Isolation = "bwrap") -> ExecResult:
    """Benchmark baseline: a fresh ``python -I -S -c`` per program under bubblewrap with the workers' namespaces
    and no capabilities, which gives each program a fresh world by construction. It has none of the pool's
    per-program seccomp filter, uid or process-tree limits: not for untrusted code."""
    import resource

    limits = limits or Limits()
    exe, _ = _python_paths()
    argv = (_bwrap_argv(limits, root_mode=os.geteuid() == 0, worker=False) if isolation == "bwrap" else []) + [
        exe, "-I", "-S", "-c", code]

    def set_limits() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))

    t0 = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=limits.wall_s, preexec_fn=set_limits, check=False,
                              stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"})
    except subprocess.TimeoutExpired:
        return ExecResult("timeout", wall_s=time.monotonic() - t0, isolation=isolation)
    status: Status = "ok" if proc.returncode == 0 else ("killed" if proc.returncode < 0 else "error")
    return ExecResult(status, exit_code=proc.returncode, stdout=proc.stdout.decode(errors="replace"),
                      stderr=proc.stderr.decode(errors="replace"), wall_s=time.monotonic() - t0,
                      isolation=isolation)
