"""Whether the process computing an unfinished run is still alive (Linux ``/proc``; elsewhere the pid only).

An unfinished run records its process (host, boot id, pid, start time), so a run whose process is gone shows as
``interrupted`` rather than ``running`` forever, and a reused pid or a reboot is not mistaken for the owner.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any


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


def this_process() -> dict[str, Any]:
    """What identifies this process later, from any process on this machine."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "boot_id": _boot_id(), "start": _start_time(pid),
            "since": time.time()}


def alive(owner: dict[str, Any]) -> bool:
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
