"""Advisory file locks under ``$HOTDOG_HOME/locks/``: who may write what, across processes.

Partitions are files replaced atomically, so parallel batches never need a lock. A few things are
shared by every run and do:

- ``run``: held by ``hotdog run`` (and ``hotdog plan``) for its whole life, so two of them on one
  home never plan, write and rebuild the same things at once. A second one says who holds it (pid,
  command, since when) and stops, or waits with ``--wait``.
- ``catalog``: ``catalog.duckdb`` allows one writing process at a time and a read-only connection
  cannot open while another process writes. The catalog refresh and dbt hold it exclusively,
  readers share it, so neither sees DuckDB's "Could not set lock on file" error.
- ``index``: ``index/`` is read, grown and swapped whole; two whole-set runs at once would each
  grow their own copy and the last swap would drop what the other added.

The locks are ``flock(2)`` locks on files that are never deleted: the kernel releases them when
the holder exits, killed or not, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

#: How long a writer waits for the catalog or the index before giving up (seconds).
WRITE_WAIT_S = float(os.environ.get("HOTDOG_LOCK_WAIT_S", "600"))
#: How long a reader (search, the walk, the run's summary) waits for a writer to finish.
READ_WAIT_S = float(os.environ.get("HOTDOG_LOCK_READ_WAIT_S", "300"))


class Busy(RuntimeError):
    """A lock another process holds; the message names the lock file and the holder."""

    def __init__(self, message: str, holder: dict | None = None) -> None:
        super().__init__(message)
        self.holder = holder or {}


def lock_path(root: Path, name: str) -> Path:
    return Path(root) / "locks" / f"{name}.lock"


def holder_of(path: Path) -> dict:
    """What the last exclusive holder wrote into the lock file (pid, command, host, since), or {}."""
    try:
        return json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def describe_holder(holder: dict) -> str:
    if not holder:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    where = f" on {holder['host']}" if holder.get("host") and holder.get("host") != socket.gethostname() else ""
    return f"pid {holder.get('pid')}{where} ({holder.get('command', '?')}, since {since})"


@contextlib.contextmanager
def file_lock(path: Path, *, shared: bool = False, wait: float | None = WRITE_WAIT_S, what: str = "") -> Iterator[None]:
    """Hold ``path`` locked (shared or exclusive) for the block.

    ``wait`` is how long to wait for another holder: ``None`` waits for ever, ``0`` fails at once.
    An exclusive holder writes its pid, command and start time into the file, so whoever waits or
    gives up can say who holds it. Raises :class:`Busy` when the wait runs out.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        deadline = None if wait is None else time.monotonic() + wait
        delay = 0.05
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    holder = holder_of(path)
                    raise Busy(
                        f"{what or path.stem} is busy: {describe_holder(holder)} holds {path}"
                        + (f" (waited {wait:.0f} s)" if wait else ""),
                        holder,
                    ) from None
                time.sleep(delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, 1.0)
        if not shared:
            info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200],
                "since": time.time(),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
