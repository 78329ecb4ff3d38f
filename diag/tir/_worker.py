"""The warm worker that runs INSIDE the sandbox (stdlib only; started as ``python -I -S -c <this file>``).

It is the init process (PID 1) of its own PID namespace, so a program cannot kill it: the kernel drops
every signal sent to a namespace's init from inside unless init installed a handler, and it installs none.
Each program (one JSON line on stdin: its source and wall clock) runs in a child forked from this already-started
interpreter before the request arrives. In bubblewrap modes that child first builds a fresh kernel-object world
for the program: new IPC and mount namespaces (no message queue, shared-memory segment or semaphore of an earlier
program is visible, and all of them vanish with the program), one new size-capped tmpfs that is both ``/tmp``
(the work directory) and ``/dev/shm``, a read-only ``/dev``, and small per-namespace IPC quotas. It then drops to
the program's uid when the host is root and clears its capabilities (the worker emptied the bounding set), sets
the pool's rlimits, ``no_new_privs`` and a seccomp filter (no new namespaces, mounts, keyrings, ptrace, bpf,
io_uring) and closes every inherited fd; only then does it read the program's source, compile and run it. While
it runs, the worker enforces the wall clock and the output cap and watches the whole process tree: memory (PSS
summed over every process but init), CPU seconds (including reaped children) and process count. When the program
ends it SIGKILLs every other process in the namespace (``kill(-1)`` spares only init), so nothing a program
started outlives it. One JSON line answers.
"""

# Modules programs commonly import (marked F401) are loaded once here so every forked child gets them free.
import bisect  # noqa: F401
import builtins
import collections  # noqa: F401
import contextlib
import ctypes
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
import platform
import random  # noqa: F401
import re  # noqa: F401
import resource
import select
import signal
import statistics  # noqa: F401
import string  # noqa: F401
import sys
import time
import traceback

PROTOCOL_IN = sys.stdin.buffer
PROTOCOL_OUT = sys.stdout.buffer
# {"isolate": bool (bubblewrap: fresh namespaces per program, sweep, watchdog), "uid": int | None,
#  "tmp": str (rlimits mode: where work dirs go),
#  "limits": the pool's limits, every program's (its world and rlimits are set before its request arrives)}
# A request is {"code": str, "wall_s": float}: the program and its own wall clock.
SETTINGS = json.loads(sys.argv[1])
LIBC = ctypes.CDLL(None, use_errno=True)
# Looked up once here: a forked child that resolved them itself (or made the array types) would pay for it on
# every program.
PRCTL, MOUNT, UNSHARE, CAPSET = LIBC.prctl, LIBC.mount, LIBC.unshare, LIBC.capset
CAP_HEADER = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
NO_CAPS = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable (two 32-bit words each): all empty
# What a program sees as its environment and as sys.stdin/stdout/stderr, made once here (the worker never uses
# them) rather than in every child: a child's fds 0-2 are the program's by the time it installs them, and in
# rlimits mode it sets HOME and TMPDIR to its own work directory.
PROGRAM_ENV = {"HOME": "/tmp", "TMPDIR": "/tmp", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
PROGRAM_STDIO = (
    io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8"),
    io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace"),
    io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace"),
)
_exit = os._exit  # bound here: a program may replace os._exit in the child it shares this module with
CLK_TCK = os.sysconf("SC_CLK_TCK")
WATCH_S = 0.01  # how often the process-tree watchdog looks while a program runs
SETUP_OK = b"\x01"  # the child's word that the program's world is built (sent before any program code runs)
BOX = "/tmp/box"  # where each program's tmpfs is mounted before it becomes /tmp and /dev/shm

CLONE_NEWNS, CLONE_NEWIPC = 0x00020000, 0x08000000
CLONE_NAMESPACES = 0x7E020080  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWTIME
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_SECUREBITS, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 4, 24, 28, 38, 22
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
SECBIT_NOROOT_AND_LOCKED = 0x3  # uid 0 (inside a user namespace) gains no capabilities by exec

# Syscalls a program never needs and that open kernel attack surface or outlive it (x86_64, aarch64 numbers).
DENIED_SYSCALLS = {
    "unshare": (272, 97), "setns": (308, 268), "mount": (165, 40), "umount2": (166, 39),
    "pivot_root": (155, 41), "chroot": (161, 51), "open_tree": (428, 428), "move_mount": (429, 429),
    "fsopen": (430, 430), "fsconfig": (431, 431), "fsmount": (432, 432), "fspick": (433, 433),
    "mount_setattr": (442, 442), "add_key": (248, 217), "request_key": (249, 218), "keyctl": (250, 219),
    "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271), "bpf": (321, 280),
    "perf_event_open": (298, 241), "userfaultfd": (323, 282), "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426), "io_uring_register": (427, 427), "kexec_load": (246, 104),
    "init_module": (175, 105), "finit_module": (313, 273), "delete_module": (176, 106),
}
ARCHES = {"x86_64": (0, 0xC000003E, 56), "aarch64": (1, 0xC00000B7, 220)}  # column, AUDIT_ARCH, clone
CLONE3 = 435


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _seccomp_program() -> _SockFprog | None:
    """A classic-BPF seccomp filter: deny DENIED_SYSCALLS and namespace flags to clone (EPERM), make clone3
    ENOSYS (its flags sit behind a pointer; libc falls back to clone), kill on a foreign ABI. None when the
    architecture is not one we have syscall numbers for."""
    arch = ARCHES.get(platform.machine())
    if arch is None:
        return None
    column, audit_arch, clone = arch
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, kill = 0x7FFF0000, 0x80000000
    eperm, enosys = 0x00050000 | 1, 0x00050000 | 38
    # (code, jump-if-true label, jump-if-false label, k); labels resolve to relative offsets below.
    insns: list[tuple[int, object, object, int]] = [(ld, 0, 0, 4), (jeq, 1, 0, audit_arch), (ret, 0, 0, kill),
                                                    (ld, 0, 0, 0)]
    if column == 0:
        insns.append((jge, "deny", 0, 0x40000000))  # the x32 ABI aliases every syscall above this bit
    insns += [(jeq, "deny", 0, nrs[column]) for nrs in DENIED_SYSCALLS.values()]
    insns += [(jeq, "enosys", 0, CLONE3), (jeq, 1, 0, clone), (ret, 0, 0, allow),
              (ld, 0, 0, 16), (jset, "deny", 0, CLONE_NAMESPACES), (ret, 0, 0, allow)]
    labels = {"deny": len(insns), "enosys": len(insns) + 1}
    insns += [(ret, 0, 0, eperm), (ret, 0, 0, enosys)]
    filters = (_SockFilter * len(insns))(*[
        _SockFilter(code, labels[jt] - i - 1 if isinstance(jt, str) else jt,
                    labels[jf] - i - 1 if isinstance(jf, str) else jf, k)
        for i, (code, jt, jf, k) in enumerate(insns)])
    return _SockFprog(len(insns), filters)


SECCOMP = _seccomp_program()


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _prctl(option: int, *args: int) -> None:
    values = [ctypes.c_ulong(a) for a in args] + [ctypes.c_ulong(0)] * (4 - len(args))
    _check(PRCTL(ctypes.c_int(option), *values), f"prctl({option})")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = [None if s is None else s.encode() for s in (source, target, fstype, data)]
    _check(MOUNT(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]), f"mount {target}")


def _fresh_world(limits: dict, uid: int | None) -> None:
    """New IPC and mount namespaces with one empty tmpfs as /tmp and /dev/shm and small IPC quotas: nothing an
    earlier program left in any of them is visible, and all of it is freed when the program's last process
    exits. With ``uid`` (root mode) the program cannot write /dev or /proc/sys anyway; in user-namespace mode
    its uid 0 owns them, so both turn read-only (the IPC quota files would otherwise be its to raise)."""
    _check(UNSHARE(ctypes.c_int(CLONE_NEWNS | CLONE_NEWIPC)), "unshare")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", BOX, "tmpfs", MS_NOSUID | MS_NODEV, f"size={int(limits['tmp_bytes'])},mode=0755")
    for sub in ("shm", "work"):
        os.mkdir(f"{BOX}/{sub}")
        os.chmod(f"{BOX}/{sub}", 0o1777)
        if uid is not None:
            os.chown(f"{BOX}/{sub}", uid, uid)
    if uid is None:
        dev_flags = os.statvfs("/dev").f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC)  # kept as they are
        _mount(None, "/dev", None, MS_REMOUNT | MS_BIND | MS_RDONLY | dev_flags)
    _mount(f"{BOX}/shm", "/dev/shm", None, MS_BIND)
    _mount(f"{BOX}/work", "/tmp", None, MS_BIND)  # last: it hides BOX
    page = os.sysconf("SC_PAGE_SIZE")
    # Per-IPC-namespace quotas (the defaults allow ~all of RAM in SysV shm and 512 MB of SysV messages).
    shm = int(limits["memory_bytes"]) // 4  # SysV segments outlive detaching: a quarter of the memory limit
    for key, value in (("kernel/shmmax", shm), ("kernel/shmall", shm // page),
                       ("kernel/shmmni", 64), ("kernel/msgmni", 16), ("kernel/sem", "64 1024 64 32"),
                       ("fs/mqueue/queues_max", 16)):
        fd = os.open(f"/proc/sys/{key}", os.O_WRONLY)
        try:
            os.write(fd, str(value).encode())
        finally:
            os.close(fd)
    if uid is None:
        _mount("/proc/sys", "/proc/sys", None, MS_BIND)
        _mount(None, "/proc/sys", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


def _limit_inheritance() -> None:
    """Once, in the worker (it never execs, so it keeps its own capabilities): empty the bounding set, clear
    the ambient set and make uid 0 gain nothing by exec. Every program's child inherits all three."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last_cap = int(f.read())
    for cap in range(last_cap + 1):
        _prctl(PR_CAPBSET_DROP, cap)
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    _prctl(PR_SET_SECUREBITS, SECBIT_NOROOT_AND_LOCKED)


def _drop_privileges(uid: int | None) -> None:
    """Leave root mode's uid 0 for the program's own uid and clear every capability set."""
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    _check(CAPSET(CAP_HEADER, NO_CAPS), "capset")


def _set_up(workdir: str) -> None:
    """The program's world (isolated modes), its privileges dropped, its rlimits, no_new_privs and the seccomp
    filter: none of it depends on the program, so all of it is done before the program arrives."""
    if SETTINGS["isolate"]:
        _fresh_world(SETTINGS["limits"], SETTINGS["uid"])
        _drop_privileges(SETTINGS["uid"])
    os.chdir(workdir)
    _set_limits(SETTINGS["limits"])
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    if SECCOMP is not None:
        _prctl(PR_SET_SECCOMP, 2, ctypes.addressof(SECCOMP))  # SECCOMP_MODE_FILTER


def _set_limits(limits: dict) -> None:
    cpu = int(limits["cpu_s"])
    for res, soft, hard in (
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_AS, limits["memory_bytes"], limits["memory_bytes"]),
        (resource.RLIMIT_NPROC, limits["processes"], limits["processes"]),
        (resource.RLIMIT_FSIZE, limits["file_bytes"], limits["file_bytes"]),
        (resource.RLIMIT_NOFILE, limits["open_files"], limits["open_files"]),
        (resource.RLIMIT_MSGQUEUE, 2**19, 2**19),
        (resource.RLIMIT_CORE, 0, 0),
    ):
        ceiling = resource.getrlimit(res)[1]  # never above the hard limit we were given (raising needs a cap)
        if ceiling != resource.RLIM_INFINITY:
            soft, hard = min(soft, ceiling), min(hard, ceiling)
        resource.setrlimit(res, (soft, hard))


def _child(workdir: str, code_r: int, out_w: int, err_w: int, setup_w: int) -> None:
    """Build the program's world and process (all but its source), say so, then read the source (``code_r`` up
    to EOF) and run it in this process. The worker forks this child before the request arrives: only compiling
    and running are left for after it."""
    os.setsid()
    devnull = os.open("/dev/null", os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    try:
        _set_up(workdir)
    except BaseException as exc:  # noqa: BLE001 - the world could not be built: the worker reports infra_error
        os.write(2, f"sandbox setup failed: {type(exc).__name__}: {exc}\n".encode())
        _exit(127)
    os.write(setup_w, SETUP_OK)
    os.closerange(3, code_r)  # the protocol pipes and everything else the worker holds
    os.closerange(code_r + 1, 4096)
    if not SETTINGS["isolate"]:
        os.environ.update(HOME=workdir, TMPDIR=workdir)
    sys.stdin, sys.stdout, sys.stderr = PROGRAM_STDIO
    sys.argv = ["<program>"]
    with open(code_r, "rb") as f:
        src = f.read().decode("utf-8", "surrogatepass")
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
    _exit(code & 0xFF)


def _tree_usage(memory: bool) -> tuple[int, float, int]:
    """PSS bytes (when asked), CPU seconds (reaped children included) and count of every process in our PID
    namespace but init: the program and all it started."""
    pss, cpu, count = 0, 0.0, 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or entry == "1":
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            fields = stat[stat.rfind(b")") + 2:].split()
            cpu += sum(int(x) for x in fields[11:15]) / CLK_TCK  # utime stime cutime cstime
            count += 1
            if memory:
                with open(f"/proc/{entry}/smaps_rollup", "rb") as f:
                    pss += next((int(line.split()[1]) * 1024 for line in f if line.startswith(b"Pss:")), 0)
        except (OSError, ValueError, IndexError):  # the process exited meanwhile
            continue
    return pss, cpu, count


def _over_limit(limits: dict) -> tuple[str, str] | None:
    """(status, message) when the program's process tree as a whole broke a limit. A lone process is held by
    its rlimits already (address space >= PSS, RLIMIT_CPU), so memory is only summed once it has company."""
    mib = 2**20
    _, cpu, count = _tree_usage(memory=False)
    if count > int(limits["processes"]):
        return "error", f"BlockingIOError: more than {limits['processes']} processes (sandbox limit)"
    if count > 1 and cpu > int(limits["cpu_s"]) + 0.25:
        return "timeout", f"CPU time limit: the program's processes used {cpu:.1f} s together (limit {limits['cpu_s']} s)"
    if count > 1:
        pss = _tree_usage(memory=True)[0]
        if pss > int(limits["memory_bytes"]):
            return "error", (f"MemoryError: the program's {count} processes held {pss / mib:.0f} MiB together "
                             f"(limit {int(limits['memory_bytes']) / mib:.0f} MiB)")
    return None


def _sweep(pid: int) -> None:
    """Kill and reap everything the program started: every process in our PID namespace but us (rlimits mode:
    only the program's process group, which setsid escapes; that mode is flagged weak)."""
    if not SETTINGS["isolate"]:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        return
    while True:  # kill again until no child is left: a process forked mid-sweep is caught on the next round
        with contextlib.suppress(OSError):
            os.kill(-1, signal.SIGKILL)
        try:
            done, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if done == 0:
            time.sleep(0.0005)


def _remove_tree(path: str) -> None:
    """Delete a work directory without recursion: a program may nest directories deeper than Python's stack."""
    stack = [os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)]
    names: list[str] = []
    while stack:
        fd = stack[-1]
        subdir = None
        for entry in os.scandir(fd):
            if entry.is_dir(follow_symlinks=False):
                subdir = entry.name
                break
            os.unlink(entry.name, dir_fd=fd)
        if subdir is not None:
            stack.append(os.open(subdir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd))
            names.append(subdir)
            continue
        os.close(stack.pop())
        if stack:
            os.rmdir(names.pop(), dir_fd=stack[-1])
    os.rmdir(path)


class _Child:
    """A forked child that has built its program's world and waits for the request (pipes on our side)."""

    def __init__(self, counter: int) -> None:
        self.workdir = "/tmp" if SETTINGS["isolate"] else os.path.join(SETTINGS["tmp"], f"p{counter}")
        if not SETTINGS["isolate"]:
            os.mkdir(self.workdir, 0o700)
        code_r, self.code_w = os.pipe()
        self.out_r, out_w = os.pipe()
        self.err_r, err_w = os.pipe()
        self.setup_r, setup_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                for fd in (self.code_w, self.out_r, self.err_r, self.setup_r):
                    os.close(fd)  # the code pipe ends only when no copy of its write end is left
                _child(self.workdir, code_r, out_w, err_w, setup_w)
            finally:
                _exit(127)
        for fd in (code_r, out_w, err_w, setup_w):
            os.close(fd)
        self.pidfd = os.pidfd_open(self.pid)  # readable once the child has exited: no polling for its exit

    def close(self) -> None:
        for fd in (self.code_w, self.out_r, self.err_r, self.setup_r, self.pidfd):
            try:
                os.close(fd)
            except OSError:  # code_w is closed once the program is sent
                pass
        if not SETTINGS["isolate"]:
            try:
                _remove_tree(self.workdir)
            except OSError:  # weak mode: what a program made unremovable goes when the pool closes
                pass


def run_one(req: dict, child: _Child) -> dict:
    """Run ``req["code"]`` in ``child`` under the pool's limits with the request's wall clock ``req["wall_s"]``."""
    limits = {**SETTINGS["limits"], "wall_s": req["wall_s"]}
    t0 = time.monotonic()
    try:
        with open(child.code_w, "wb", closefd=False) as f:
            f.write(req["code"].encode("utf-8", "surrogatepass"))
    except BrokenPipeError:  # the child died building the world: its stderr says why
        pass
    os.close(child.code_w)
    pid, pidfd, out_r, err_r = child.pid, child.pidfd, child.out_r, child.err_r
    bufs = {out_r: bytearray(), err_r: bytearray()}
    open_fds = [out_r, err_r]
    deadline = t0 + float(limits["wall_s"])
    next_watch = t0 + WATCH_S if SETTINGS["isolate"] else deadline
    cap = int(limits["max_output_bytes"])
    timed_out = truncated = False
    over: tuple[str, str] | None = None
    wstatus = None
    rusage = None
    wall = 0.0
    while True:
        now = time.monotonic()
        if now >= deadline:
            timed_out = wstatus is None
            break
        if wstatus is None and now >= next_watch:
            over = _over_limit(limits)
            if over is not None:
                break
            next_watch = now + WATCH_S
        # Once the program has exited only what is already buffered counts (grandchildren may hold the pipes).
        wait = min(deadline, next_watch) - now if wstatus is None else 0
        ready = select.select(open_fds + ([pidfd] if wstatus is None else []), [], [], wait)[0]
        if pidfd in ready:
            _, wstatus, rusage = os.wait4(pid, 0)
            wall = time.monotonic() - t0
            ready.remove(pidfd)
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                open_fds.remove(fd)
                continue
            bufs[fd] += chunk
            if len(bufs[out_r]) + len(bufs[err_r]) > cap:
                truncated = True
        if truncated or (wstatus is not None and (not open_fds or not ready)):
            break
    if wstatus is None:  # still running: stop it now for its rusage; what it started goes in the sweep
        wall = time.monotonic() - t0
        os.kill(pid, signal.SIGKILL)
        _, wstatus, rusage = os.wait4(pid, 0)
    set_up = bool(select.select([child.setup_r], [], [], 0)[0]) and os.read(child.setup_r, 1) == SETUP_OK
    if not set_up:
        return {"status": "infra_error", "stderr": bytes(bufs[err_r][-2000:]).decode("utf-8", "replace")}
    cpu = rusage.ru_utime + rusage.ru_stime
    exit_code, sig = None, None
    if os.WIFEXITED(wstatus):
        exit_code = os.WEXITSTATUS(wstatus)
    elif os.WIFSIGNALED(wstatus):
        sig = os.WTERMSIG(wstatus)
    if over is not None:
        status, note = over
        note = f"\nsandbox: {note}; all its processes were killed\n".encode()
        del bufs[err_r][max(0, cap - len(bufs[out_r]) - len(note)):]
        bufs[err_r] += note
    elif truncated:
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
    _prctl(PR_SET_DUMPABLE, 0)  # refuse ptrace and /proc/1/mem to programs running under our uid
    if SETTINGS["isolate"]:
        _limit_inheritance()
    os.umask(0o022)
    os.environ.clear()
    os.environ.update(PROGRAM_ENV)
    os.makedirs(BOX if SETTINGS["isolate"] else SETTINGS["tmp"], exist_ok=True)

    def send(obj: dict) -> None:
        PROTOCOL_OUT.write(json.dumps(obj).encode() + b"\n")
        PROTOCOL_OUT.flush()

    # A process's first compile() builds the interpreter's AST node types (~1 ms): done here once, not in every
    # forked child.
    compile("pass", "<warm-up>", "exec")
    # The next program's child is forked and builds its world while we wait for its request.
    child = _Child(0)
    send({"ready": True, "pid": os.getpid(), "uid": os.getuid(), "seccomp": SECCOMP is not None})
    for counter, line in enumerate(PROTOCOL_IN, 1):
        try:
            reply = run_one(json.loads(line), child)
        except Exception as exc:  # noqa: BLE001 - a bug or resource failure of the worker itself: infrastructure
            reply = {"status": "infra_error", "stderr": f"worker: {type(exc).__name__}: {exc}"}
        send(reply)
        _sweep(child.pid)  # after the answer, before the next child: nothing of this program outlives it
        child.close()
        child = _Child(counter)


main()
