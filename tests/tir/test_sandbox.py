"""Hostile programs: each is contained with the right status, and the pool keeps answering correctly after it.

All tests share one warm pool (module fixture) with tight limits, so the whole file runs in seconds; after
every hostile program a normal program must still give the exact answer.
"""

from __future__ import annotations

import os
import signal
import socket
import threading

import pytest

from diag.errors import DiagError
from diag.tir.sandbox import WEAK_ISOLATION_WARNING, Limits, Sandbox, bwrap_available

HAS_BWRAP = bwrap_available()[0]
needs_bwrap = pytest.mark.skipif(not HAS_BWRAP, reason="bubblewrap unusable here (CI installs it)")
LIMITS = Limits(wall_s=1.5, cpu_s=1, memory_bytes=256 * 2**20, processes=24, file_bytes=4 * 2**20,
                max_output_bytes=16 * 2**10, tmp_bytes=16 * 2**20)


@pytest.fixture(scope="module")
def pool():
    with Sandbox(workers=2, limits=LIMITS, isolation="bwrap" if HAS_BWRAP else "auto") as sandbox:
        yield sandbox


def still_works(pool: Sandbox) -> None:
    """The next normal program on every worker gives the exact answer."""
    for result in pool.run_many(["print(sum(i * i for i in range(1000)) * 7 ** 30)"] * 4):
        assert result.status == "ok", result
        assert result.stdout == f"{332833500 * 7 ** 30}\n"
        assert not result.infra


def run(pool: Sandbox, code: str, wall_s: float | None = None):
    result = pool.run(code, wall_s)
    still_works(pool)
    return result


def test_normal_program_and_error_traceback(pool):
    ok = pool.run("import math\nprint(math.comb(50, 25))")
    assert (ok.status, ok.exit_code, ok.stdout) == ("ok", 0, "126410606437752\n")
    bad = pool.run("x = 1\ny = x / 0\n")
    assert bad.status == "error" and bad.exit_code == 1
    assert 'File "<program>", line 2' in bad.stderr and "ZeroDivisionError" in bad.stderr
    assert "_worker" not in bad.stderr  # the worker's own frames are not shown to the model


def test_syntax_error_and_exit_codes(pool):
    assert pool.run("def f(:\n").status == "error"
    r = pool.run("import os; os._exit(3)")
    assert (r.status, r.exit_code) == ("error", 3)
    assert pool.run("raise SystemExit(0)").status == "ok"


@needs_bwrap
def test_fork_bomb_that_swallows_errors(pool):
    r = run(pool, "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n")
    assert r.status == "timeout"


@needs_bwrap
def test_fork_bomb_naive(pool):
    r = run(pool, "import os\nwhile True:\n    os.fork()\n")
    assert r.status in ("error", "timeout")
    assert r.status == "timeout" or "BlockingIOError" in r.stderr or "Resource" in r.stderr


def test_memory_bomb_single_allocation(pool):
    r = run(pool, "x = bytearray(4 * 1024**3)\nprint('allocated')")
    assert r.status == "error" and "MemoryError" in r.stderr and "allocated" not in r.stdout


def test_memory_bomb_incremental(pool):
    r = run(pool, "chunks = []\nwhile True:\n    chunks.append(b'x' * 2**20)\n")
    assert r.status == "error" and "MemoryError" in r.stderr


def test_infinite_loop(pool):
    r = run(pool, "while True:\n    pass\n")
    assert r.status == "timeout"
    assert r.wall_s < LIMITS.wall_s + 3.0  # stopped at the limit (generous: CI machines are shared)


def test_cpu_limit_below_wall_clock(pool):
    r = run(pool, "while True:\n    pass\n", wall_s=5.0)  # cpu_s = 1 fires first (SIGXCPU)
    # SIGXCPU (not the 5 s wall clock) stopped it, after about one CPU second.
    assert r.status == "timeout" and r.signal == signal.SIGXCPU and 0.9 <= r.cpu_s < 2.0


def test_sleep_past_timeout(pool):
    r = run(pool, "import time\nprint('start', flush=True)\ntime.sleep(100)\n")
    assert r.status == "timeout" and r.stdout == "start\n"


def test_ignoring_sigterm(pool):
    r = run(pool, "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                  "signal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    time.sleep(0.01)\n")
    assert r.status == "timeout"


def test_disk_fill_one_big_file(pool):
    r = run(pool, "with open('big', 'wb') as f:\n    while True:\n        f.write(b'x' * 2**20)\n")
    assert r.status == "error" and ("File too large" in r.stderr or "No space" in r.stderr)


@needs_bwrap
def test_disk_fill_many_files(pool):
    r = run(pool, "i = 0\nwhile True:\n    with open(f'f{i}', 'wb') as f:\n        f.write(b'x' * 2**19)\n"
                  "    i += 1\n")
    assert r.status == "error" and "No space left" in r.stderr
    # The private temp dir was wiped: the next program has the whole tmpfs again.
    assert pool.run("open('a', 'wb').write(b'y' * 2**22)").status == "ok"


@needs_bwrap
def test_temp_dir_is_private_per_program(pool):
    first = pool.run("import os\nopen('note.txt', 'w').write('secret')\nprint(os.getcwd())")
    assert first.status == "ok"
    second = pool.run("import os\nprint(os.listdir('.'), os.listdir('/tmp/work'))")
    assert "note.txt" not in second.stdout


@needs_bwrap
def test_writing_outside_temp_dir(pool, tmp_path):
    target = tmp_path / "escaped.txt"
    for path in (str(target), "/usr/escaped.txt", "/escaped.txt", "/tmp/../escaped.txt", "/proc/sysrq-trigger"):
        r = run(pool, f"open({path!r}, 'w').write('x')")
        assert r.status == "error", path
        assert any(e in r.stderr for e in ("Read-only", "Permission", "No such file")), r.stderr
    assert not target.exists()


@needs_bwrap
def test_reading_env_secrets(pool, monkeypatch):
    monkeypatch.setenv("DIAG_TEST_SECRET", "hunter2-secret")
    r = run(pool, "import os\nprint(dict(os.environ))\nprint(open('/proc/1/environ', 'rb').read())")
    assert "hunter2-secret" not in r.stdout + r.stderr


@needs_bwrap
def test_reading_home_and_project_files(pool, tmp_path):
    secret = tmp_path / "home" / ".ssh" / "id_rsa"
    secret.parent.mkdir(parents=True)
    secret.write_text("PRIVATE-KEY-MATERIAL")
    project = os.path.abspath("pyproject.toml")
    code = (f"import os\nfor p in [{str(secret)!r}, {project!r}, os.path.expanduser('~/.bashrc'), '/root/.bashrc',"
            " '/etc/passwd']:\n    try:\n        print(p, open(p).read()[:20])\n    except OSError as e:\n"
            "        print(p, 'DENIED', e)\n")
    r = run(pool, code)
    assert r.status == "ok"
    assert "PRIVATE-KEY-MATERIAL" not in r.stdout and "[project]" not in r.stdout
    assert r.stdout.count("DENIED") == 5


@needs_bwrap
def test_network_connection(pool):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    hits: list[object] = []

    def accept() -> None:
        try:
            hits.append(server.accept())
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    code = (f"import socket\nfor host in [('127.0.0.1', {port}), ('1.1.1.1', 53), ('example.com', 80)]:\n"
            "    try:\n        socket.create_connection(host, timeout=0.5)\n        print('CONNECTED', host)\n"
            "    except OSError as e:\n        print('blocked', e)\n")
    r = run(pool, code)
    thread.join()
    server.close()
    assert r.status == "ok" and "CONNECTED" not in r.stdout and r.stdout.count("blocked") == 3
    assert not hits


@needs_bwrap
def test_killing_the_parent_and_everything(pool):
    before = pool.worker_pids()
    # As root the program has its own uid and gets EPERM; as a user the kernel drops signals to the namespace init.
    code = ("import os, signal\nfor sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGSTOP):\n"
            "    for pid in (os.getppid(), 1, -1):\n        try:\n            os.kill(pid, sig)\n"
            "        except (PermissionError, ProcessLookupError):\n            pass\nprint('still here')")
    r = run(pool, code)
    assert r.status == "ok" and r.stdout == "still here\n"
    assert pool.worker_pids() == before  # the workers were never replaced


@needs_bwrap
def test_killing_the_host_process(pool):
    r = run(pool, f"import os\nos.kill({os.getpid()}, 9)")
    assert r.status == "error" and "ProcessLookupError" in r.stderr


@needs_bwrap
def test_ptrace_of_worker_is_refused(pool):
    r = run(pool, "print(open('/proc/1/mem', 'rb').read(1))")
    assert r.status == "error" and ("Permission" in r.stderr or "Input/output" in r.stderr)


def test_huge_stdout(pool):
    r = run(pool, "while True:\n    print('A' * 1000)\n")
    assert r.status == "output_truncated"
    assert len(r.stdout.encode()) <= LIMITS.max_output_bytes


def test_huge_stderr(pool):
    r = run(pool, "import sys\nsys.stderr.write('E' * 10**7)\nsys.stderr.flush()\n")
    assert r.status == "output_truncated"
    assert len((r.stdout + r.stderr).encode()) <= LIMITS.max_output_bytes


def test_reading_stdin(pool):
    r = run(pool, "import sys\ndata = sys.stdin.read()\nprint(repr(data), repr(input.__name__))")
    assert r.status == "ok" and r.stdout.startswith("''")
    r = run(pool, "x = input()")
    assert r.status == "error" and "EOFError" in r.stderr


def test_segfault_via_ctypes(pool):
    r = run(pool, "import ctypes\nctypes.string_at(0)\n")
    assert r.status == "killed" and r.signal == 11


def test_deep_recursion(pool):
    r = run(pool, "def f(n):\n    return f(n + 1)\nf(0)\n")
    assert r.status == "error" and "RecursionError" in r.stderr


def test_deep_recursion_with_raised_limit(pool):
    r = run(pool, "import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1)\nf(0)\n")
    # 3.11 keeps Python frames on the heap: SIGSEGV, MemoryError under RLIMIT_AS, or the CPU limit, whichever first.
    assert r.status in ("killed", "error", "timeout") and not r.infra


@needs_bwrap
def test_thread_bomb(pool):
    r = run(pool, "import threading, time\nts = []\nwhile True:\n"
                  "    t = threading.Thread(target=time.sleep, args=(100,))\n    t.start()\n    ts.append(t)\n")
    assert r.status == "error" and "can't start new thread" in r.stderr


def test_spawning_subprocesses(pool):
    r = run(pool, "import subprocess\nprint(subprocess.run(['echo', 'from-child'], capture_output=True,"
                  " text=True).stdout.strip())")
    assert r.status == "ok" and r.stdout == "from-child\n"


def test_os_system(pool):
    r = run(pool, "import os\nrc = os.system('echo via-shell; exit 4')\nprint(rc >> 8)")
    assert r.status == "ok" and r.stdout == "via-shell\n4\n"


@needs_bwrap
def test_daemon_left_behind_is_killed(pool):
    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(1000)\n"
            "    os._exit(0)\nprint('parent done')\n")
    r = pool.run(code)
    assert r.status == "ok" and r.stdout == "parent done\n"
    code = "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()) == [1, os.getpid()])"
    for check in pool.run_many([code] * 4):
        assert check.stdout == "True\n"  # only the worker (init) and this program exist


def test_closing_stdout_and_running_on(pool):
    r = run(pool, "import os, time\nos.close(1)\nos.close(2)\ntime.sleep(100)\n")
    assert r.status == "timeout"


@needs_bwrap
def test_protocol_pipes_are_unreachable(pool):
    code = ("import os\nopened = []\nfor fd in range(3, 256):\n    try:\n        os.write(fd, b'{\"status\": \"ok\"}\\n')\n"
            "        opened.append(fd)\n    except OSError:\n        pass\nprint(opened)")
    r = run(pool, code)
    assert r.status == "ok" and r.stdout == "[]\n"


def test_parallel_mix_of_hostile_and_normal(pool):
    codes = ["while True: pass", "print(6 * 7)", "import ctypes; ctypes.string_at(0)", "print(2 ** 64)",
             "x = bytearray(8 * 1024**3)", "print('x' * 10**6)"]
    results = pool.run_many(codes)
    assert [r.status for r in results] == ["timeout", "ok", "killed", "ok", "error", "output_truncated"]
    assert results[1].stdout == "42\n" and results[3].stdout == "18446744073709551616\n"
    assert pool.stats.infra_errors == 0


@needs_bwrap
def test_no_caller_environment_or_privileges(pool):
    r = pool.run("import os\nprint(os.getuid() != 0 or len(os.listdir('/proc/self/fd')) >= 0,"
                 " open('/proc/self/status').read().split('CapEff:')[1].split()[0])")
    assert r.status == "ok" and r.stdout.split()[1] == "0000000000000000"


def test_dead_worker_is_replaced_and_counted_as_infra(pool):
    victim = pool._workers[0]
    assert victim is not None
    os.killpg(victim.proc.pid, 9)
    victim.proc.wait()
    results = pool.run_many(["print(1)"] * 4)
    assert all(r.status == "ok" for r in results)
    assert pool.stats.workers_replaced >= 1


def test_rlimits_fallback_is_loud():
    with Sandbox(workers=1, limits=LIMITS, isolation="rlimits") as weak:
        r = weak.run("print(3 ** 3)")
        assert r.status == "ok" and r.stdout == "27\n"
        assert r.isolation == "rlimits" and r.warning and WEAK_ISOLATION_WARNING in r.warning
        assert weak.run("while True: pass").status == "timeout"
        assert weak.run("print(1)").warning


def test_bad_limits_are_rejected():
    with pytest.raises(DiagError, match="wall_s"):
        Limits(wall_s=0)
