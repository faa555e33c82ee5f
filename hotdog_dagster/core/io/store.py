"""Where the pipeline's data lives on disk, and the one writer that puts it there.

Everything sits under one root (``HOTDOG_HOME``, default ``./.hotdog``) so a data set can be moved,
backed up or deleted as a unit. Partitioned tables are one Parquet file per partition: replacing a
partition is replacing a file, so re-materialising never appends duplicates. Every write goes to a
temporary name first and is renamed into place, so a crash leaves the last good version.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DEFAULT_HOME = ".hotdog"
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def home_from_env() -> Path:
    """The data root: ``$HOTDOG_HOME`` or ``./.hotdog``."""
    return Path(os.environ.get("HOTDOG_HOME", DEFAULT_HOME)).expanduser().resolve()


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
        """A partition, an unpartitioned table, or all partitions of a table; ``None`` when absent."""
        if partition is not None or self.table_path(table).exists():
            path = self.table_path(table, partition)
            return pq.read_table(path, columns=columns) if path.exists() else None
        files = self.partition_files(table)
        if not files:
            return None
        return pa.concat_tables([pq.read_table(f, columns=columns) for f in files], promote_options="default")

    def partition_files(self, table: str) -> list[Path]:
        d = self.table_dir(table)
        return sorted(d.glob("*.parquet")) if d.exists() else []

    def partitions(self, table: str) -> list[str]:
        return [p.stem for p in self.partition_files(table)]

    def drop_partition(self, table: str, partition: str) -> None:
        self.table_path(table, partition).unlink(missing_ok=True)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def replace_dir(staging: Path, target: Path) -> None:
    """Swap a fully written directory into place (the directory form of an atomic write)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    if old.exists():
        shutil.rmtree(old)
