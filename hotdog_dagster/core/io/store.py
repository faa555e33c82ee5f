"""Where the pipeline's data lives on disk, and the one writer that puts it there.

Everything sits under one root (``HOTDOG_HOME``, default ``./.hotdog``) so a data set can be moved,
backed up or deleted as a unit. Partitioned tables are one Parquet file per partition: replacing a
partition is replacing a file, so re-materialising never appends duplicates. Every write goes to a
temporary name first, flushed to disk, and renamed into place, so a crash (or a full disk) leaves
the last good version and a reader never sees a partial file. A file that is there but cannot be
read is a :class:`CorruptFile` naming the file and the asset that rewrites it.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hotdog_dagster.core.io.faults import fault_point, stage_of

DEFAULT_HOME = ".hotdog"
#: The process's umask, read once at import (reading it means setting it, which is not thread-safe later).
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def home_from_env() -> Path:
    """The data root: ``$HOTDOG_HOME`` or ``./.hotdog``."""
    return Path(os.environ.get("HOTDOG_HOME", DEFAULT_HOME)).expanduser().resolve()


class CorruptFile(RuntimeError):
    """A file of the store that exists but cannot be read: truncated, overwritten, not what it should be.

    The message names the file, what was wrong and the asset to re-materialise; ``asset`` and
    ``partition`` say the same for code. Re-materialising rewrites the file whole.
    """

    def __init__(
        self, path: Path, asset: str | None, partition: str | None, detail: str, remedy: str | None = None
    ) -> None:
        where = f" for partition {partition}" if partition else ""
        remedy = remedy or f"re-materialise the asset {asset!r}{where} to rewrite it"
        super().__init__(f"{path} is unreadable ({detail}); {remedy}")
        self.path = Path(path)
        self.asset = asset
        self.partition = partition


def check_partition_key(key: str) -> str:
    """Partition keys become file names and UI backfill keys: plain characters only, no commas."""
    if not _KEY_RE.match(key):
        raise ValueError(
            f"bad partition key {key!r}: use letters, digits, '.', '_' and '-' only "
            "(it names files, and Dagster cannot backfill keys with commas)"
        )
    return key


class Store:
    """The layout of a ``HOTDOG_HOME``: images, Parquet tables, the index, media and the catalog."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).expanduser().resolve() if root is not None else home_from_env()

    # -- places ---------------------------------------------------------------------------------
    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def tables_dir(self) -> Path:
        return self.root / "tables"

    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    @property
    def media_dir(self) -> Path:
        return self.root / "media"

    @property
    def batches_dir(self) -> Path:
        return self.root / "batches"

    @property
    def catalog_path(self) -> Path:
        return self.root / "catalog.duckdb"

    def partition_images_dir(self, partition: str) -> Path:
        return self.images_dir / check_partition_key(partition)

    def table_dir(self, table: str) -> Path:
        return self.tables_dir / table

    def table_path(self, table: str, partition: str | None = None) -> Path:
        """``tables/<table>/<partition>.parquet`` for partitioned tables, ``tables/<table>.parquet`` otherwise."""
        if partition is None:
            return self.tables_dir / f"{table}.parquet"
        return self.table_dir(table) / f"{check_partition_key(partition)}.parquet"

    def table_glob(self, table: str) -> str:
        return str(self.table_dir(table) / "*.parquet")

    # -- tables ---------------------------------------------------------------------------------
    def write_table(self, table: str, data: pa.Table, partition: str | None = None) -> Path:
        """Write (replace) a table or one partition of it, atomically."""
        path = self.table_path(table, partition)
        with atomic_path(path) as tmp:
            pq.write_table(data, tmp, compression="zstd")
        return path

    def read_table(self, table: str, partition: str | None = None, columns: list[str] | None = None) -> pa.Table | None:
        """A partition, an unpartitioned table, or all partitions of a table; ``None`` when absent.

        A file that is there but unreadable raises :class:`CorruptFile` (never a bare Arrow error,
        and never silently left out: a missing partition would be lost rows downstream).
        """
        if partition is not None or self.table_path(table).exists():
            path = self.table_path(table, partition)
            return read_parquet(path, table, partition, columns) if path.exists() else None
        files = self.partition_files(table)
        if not files:
            return None
        parts = [read_parquet(f, table, f.stem, columns) for f in files]
        return pa.concat_tables(parts, promote_options="default")

    def partition_files(self, table: str) -> list[Path]:
        d = self.table_dir(table)
        return sorted(d.glob("*.parquet")) if d.exists() else []

    def partitions(self, table: str) -> list[str]:
        return [p.stem for p in self.partition_files(table)]

    def drop_partition(self, table: str, partition: str) -> None:
        self.table_path(table, partition).unlink(missing_ok=True)

    def staging_dir(self, target: Path) -> Path:
        """A new, empty directory beside ``target`` to build its next version in (see :func:`replace_dir`).

        Unique per call, so two processes materialising the same thing never write into one
        staging directory; the pid in its name lets :func:`sweep_temporaries` remove it after a crash.
        """
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(prefix=f".{target.name}.{_writer_tag()}.", suffix=".staging", dir=target.parent)
        )
        staging.chmod(0o777 & ~_UMASK)  # mkdtemp makes it 0700; swapped in, it must read like any folder
        return staging


def read_parquet(path: Path, asset: str, partition: str | None = None, columns: list[str] | None = None) -> pa.Table:
    """One Parquet file of the store; an unreadable one is a :class:`CorruptFile` naming it and its asset.

    The file is opened once and everything is read through that one handle: given a
    path, Arrow may open it again for the pages after reading the footer, and a writer renaming a
    new version in between handed the reader one file's footer and another's pages (found by the
    reliability suite as "Page was smaller than expected" under concurrent rewrites).
    """
    try:
        with open_once(path) as source:
            return pq.read_table(source, columns=columns)
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise CorruptFile(path, asset, partition, f"{type(exc).__name__}: {exc}") from None


def open_once(path: Path) -> pa.OSFile:
    """One handle on ``path``: it keeps reading the same file even if a new version is renamed over it.

    Plain reads rather than a memory map: a file truncated under a map kills the reader with SIGBUS.
    """
    return pa.OSFile(str(path), "r")


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a crash of the machine, not only of the process)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory; the rename itself is still atomic
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file is flushed to disk before the rename, so after a power cut ``path`` is the
    old version or the new one, never an empty or partial file. Its name (``.<name>.<host>-<pid>.*.tmp``)
    matches no reader's pattern (``*.parquet``, ``*.json``) and says which writer made it, so a
    leftover of a killed writer is swept later (:func:`sweep_temporaries`). A failure (a full disk,
    an exception in the block) removes it and leaves ``path`` untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{_writer_tag()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp makes 0600; workers of a deployment may read the shared data root under another user
    os.chmod(tmp, 0o666 & ~_UMASK)
    stage = stage_of(path)
    try:
        yield tmp
        _fsync_file(tmp)
        fault_point(stage, f"written {path}")
        os.replace(tmp, path)
        fault_point(stage, f"renamed {path}")
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False  # a file system without exchange (NFS, some FUSE mounts): fall back
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(staging: Path, target: Path) -> None:
    """Swap a fully written directory into place (the directory form of an atomic write).

    On Linux the two directories are exchanged in one ``renameat2`` call, so a reader always finds
    ``target`` whole, old or new: the former rename-away-then-rename-in left a moment (and, when
    killed there, a state) with no ``target`` at all. Elsewhere it falls back to two renames, and a
    ``target`` left missing by a crash between them is restored from ``.<name>.old`` the next time.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = stage_of(target)
    fault_point(stage, f"staged {target}")
    old = target.with_name(f".{target.name}.old")
    if old.exists() and not target.exists():
        os.replace(old, target)  # a fallback swap that was killed half way: the last good version
    if target.exists() and _exchange(staging, target):
        fault_point(stage, f"swapped {target}")
        _fsync_dir(target.parent)
        shutil.rmtree(staging, ignore_errors=True)  # now the previous version
        return
    while True:
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            os.replace(target, old)
        try:
            os.replace(staging, target)
            break
        except OSError as exc:  # another writer put a target back in between: go round again
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    fault_point(stage, f"swapped {target}")
    _fsync_dir(target.parent)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)\.[^.]+\.(?:tmp|staging)$")


def _host_tag() -> str:
    return hashlib.blake2b(socket.gethostname().encode(), digest_size=4).hexdigest()


def _writer_tag() -> str:
    """``<host>-<pid>`` of this writer: on shared storage a pid only means something on its own host."""
    return f"{_host_tag()}-{os.getpid()}"


def pid_alive(pid: int) -> bool:
    """Whether a process of this host exists (another user's counts: signalling it is refused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_temporaries(root: Path, min_age_s: float = 5.0) -> list[Path]:
    """Remove temporary files and staging directories left by writers that were killed.

    Only names this module makes (``.<name>.<host>-<pid>.<random>.tmp`` / ``.staging``) made on this
    host by a pid that is no longer running, and older than ``min_age_s``, are removed: a writer at
    work in another process, or on another machine sharing the storage, is never touched. Only the
    folders writers put them in are listed (not the image folders, which may hold millions of
    files). Returns what was removed.
    """
    removed: list[Path] = []
    root = Path(root)
    if not root.is_dir():
        return removed
    now, host = time.time(), _host_tag()
    for folder in _temporary_places(root):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            m = _TEMP_RE.match(entry.name)
            if not m or m.group("host") != host or pid_alive(int(m.group("pid"))):
                continue
            path = Path(entry.path)
            try:
                if now - path.lstat().st_mtime < min_age_s:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
            except OSError:
                continue
    return removed


def _temporary_places(root: Path) -> list[Path]:
    """Every folder a writer of this module may leave a temporary in (``atomic_path``'s target folders,
    and the parents of swapped folders)."""
    places = [root, root / "tables", root / "images", root / "batches", root / "walks", root / "index"]
    tables = root / "tables"
    if tables.is_dir():
        places += [p for p in tables.iterdir() if p.is_dir() and not p.name.startswith(".")]
    media = root / "media"
    if media.is_dir():
        places += [media, *(p for p in media.rglob("*") if p.is_dir() and not p.name.startswith("."))]
    return places
