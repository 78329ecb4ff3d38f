"""The warm worker that runs INSIDE the sandbox (stdlib only; started as ``python -I -S -c <this file>``).

It is the init process (PID 1) of its own PID namespace, so a program cannot kill it: the kernel drops
every signal sent to a namespace's init from inside unless init installed a handler, and it installs none.
For each request (one JSON line on stdin) it forks a child from its already-started interpreter, which
sets rlimits, drops to an unprivileged uid when it can, and ``exec``s the program; the worker enforces the
wall-clock limit and the output cap, then SIGKILLs every other process in the namespace (``kill(-1)``
spares only the caller and init) so nothing a program started outlives it. One JSON line answers.
"""

# Modules programs commonly import (marked F401) are loaded once here so every forked child gets them free.
import bisect  # noqa: F401
import builtins
import collections  # noqa: F401
import decimal  # noqa: F401
import fractions  # noqa: F401
import functools  # noqa: F401
import heapq  # noqa: F401
import io
import itertools  # noqa: F401
import json
import linecache
import math  # noqa: F401
import os
import random  # noqa: F401
import re  # noqa: F401
import resource
import select
import shutil
import signal
import statistics  # noqa: F401
import string  # noqa: F401
import sys
import time
import traceback

PROTOCOL_IN = sys.stdin.buffer
PROTOCOL_OUT = sys.stdout.buffer
SETTINGS = json.loads(sys.argv[1])  # {"sweep": bool, "uid": int | None, "tmp": str}


def _set_nondumpable() -> None:
    """Refuse ptrace and /proc/1/mem to programs running under the same uid."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except (ImportError, OSError, AttributeError):  # minimal Pythons lack ctypes; the namespace still protects us
        return


def _child(req: dict, workdir: str, out_w: int, err_w: int) -> None:
    os.setsid()
    devnull = os.open("/dev/null", os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.closerange(3, 4096)  # the protocol pipes and everything else the worker holds
    limits = req["limits"]
    cpu = int(limits["cpu_s"])
    for res, soft, hard in (
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_AS, limits["memory_bytes"], limits["memory_bytes"]),
        (resource.RLIMIT_NPROC, limits["processes"], limits["processes"]),
        (resource.RLIMIT_FSIZE, limits["file_bytes"], limits["file_bytes"]),
        (resource.RLIMIT_NOFILE, limits["open_files"], limits["open_files"]),
        (resource.RLIMIT_CORE, 0, 0),
    ):
        resource.setrlimit(res, (soft, hard))
    uid = SETTINGS["uid"]
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    os.chdir(workdir)
    os.environ.clear()
    os.environ.update({"HOME": workdir, "TMPDIR": workdir, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace")
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace")
    sys.argv = ["<program>"]
    src = req["code"]
    linecache.cache["<program>"] = (len(src), None, src.splitlines(True), "<program>")
    code = 0
    try:
        exec(compile(src, "<program>", "exec"), {"__name__": "__main__", "__builtins__": builtins})  # noqa: S102
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException as exc:  # noqa: BLE001 - whatever the program raises is reported as its error
        tb = exc.__traceback__
        traceback.print_exception(type(exc), exc, tb.tb_next if tb is not None else None)
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # the program closed or broke its own streams
        code = code or 1
    os._exit(code & 0xFF)


def _sweep(pid: int) -> tuple[int, object] | None:
    """Kill the program and everything it started, reap them; the program's (status, rusage) if reaped."""
    for target in (-pid, pid):
        try:
            os.kill(target, signal.SIGKILL)
        except OSError:
            pass
    found = None
    if SETTINGS["sweep"]:
        try:
            os.kill(-1, signal.SIGKILL)  # every process in our PID namespace but us
        except OSError:
            pass
        while True:
            try:
                done, st, ru = os.wait4(-1, 0)
            except ChildProcessError:
                break
            if done == pid:
                found = (st, ru)
    else:
        try:
            _, st, ru = os.wait4(pid, 0)
            found = (st, ru)
        except ChildProcessError:
            pass
    return found


def run_one(req: dict, counter: int) -> dict:
    workdir = os.path.join(SETTINGS["tmp"], f"p{counter}")
    os.mkdir(workdir)
    os.chmod(workdir, 0o777)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    limits = req["limits"]
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            _child(req, workdir, out_w, err_w)
        finally:
            os._exit(127)
    os.close(out_w)
    os.close(err_w)
    bufs = {out_r: bytearray(), err_r: bytearray()}
    open_fds = [out_r, err_r]
    deadline = t0 + float(limits["wall_s"])
    cap = int(limits["max_output_bytes"])
    timed_out = truncated = False
    wstatus = None
    rusage = None
    wall = 0.0
    nap = 0.0001  # after the pipes close the child is reaped microseconds later: poll with backoff
    while True:
        if wstatus is None:
            done, st, ru = os.wait4(pid, os.WNOHANG)
            if done == pid:
                wstatus, rusage, wall = st, ru, time.monotonic() - t0
        if wstatus is not None and not open_fds:
            break
        now = time.monotonic()
        if now >= deadline:
            timed_out = wstatus is None
            break
        wait = min(deadline - now, 0.05 if open_fds else nap)
        if wstatus is not None:
            wait = 0  # exited: take what is buffered; grandchildren holding the pipes don't count
        if open_fds:
            ready = select.select(open_fds, [], [], wait)[0]
        else:
            time.sleep(wait)
            nap = min(nap * 2, 0.01)
            ready = []
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                open_fds.remove(fd)
                continue
            bufs[fd] += chunk
            if len(bufs[out_r]) + len(bufs[err_r]) > cap:
                truncated = True
        if truncated or (wstatus is not None and not ready):
            break
    if wstatus is None:
        wall = time.monotonic() - t0
    reaped = _sweep(pid)
    if wstatus is None and reaped is not None:
        wstatus, rusage = reaped
    for fd in (out_r, err_r):
        os.close(fd)
    shutil.rmtree(workdir, ignore_errors=True)
    cpu = (rusage.ru_utime + rusage.ru_stime) if rusage is not None else 0.0
    exit_code, sig = None, None
    if wstatus is not None and os.WIFEXITED(wstatus):
        exit_code = os.WEXITSTATUS(wstatus)
    elif wstatus is not None and os.WIFSIGNALED(wstatus):
        sig = os.WTERMSIG(wstatus)
    if truncated:
        status = "output_truncated"
    elif timed_out:
        status = "timeout"
    elif sig is not None:
        cpu_hit = sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= int(limits["cpu_s"]))
        status = "timeout" if cpu_hit else "killed"
    elif exit_code == 0:
        status = "ok"
    else:
        status = "error"
    return {
        "status": status,
        "exit_code": exit_code,
        "signal": sig,
        "stdout": bytes(bufs[out_r][:cap]).decode("utf-8", "replace"),
        "stderr": bytes(bufs[err_r][: max(0, cap - len(bufs[out_r]))]).decode("utf-8", "replace"),
        "wall_s": wall,
        "cpu_s": cpu,
    }


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # no handler: init ignores what it does not handle
    _set_nondumpable()
    os.umask(0o022)
    os.makedirs(SETTINGS["tmp"], exist_ok=True)

    def send(obj: dict) -> None:
        PROTOCOL_OUT.write(json.dumps(obj).encode() + b"\n")
        PROTOCOL_OUT.flush()

    send({"ready": True, "pid": os.getpid(), "uid": os.getuid()})
    for counter, line in enumerate(PROTOCOL_IN, 1):
        try:
            reply = run_one(json.loads(line), counter)
        except Exception as exc:  # noqa: BLE001 - a bug or resource failure of the worker itself: infrastructure
            reply = {"status": "infra_error", "stderr": f"worker: {type(exc).__name__}: {exc}"}
        send(reply)


main()
