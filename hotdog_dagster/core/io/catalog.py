"""``catalog.duckdb``: DuckDB views over the Parquet tables, so SQL (and dbt) sees one database.

Assets write Parquet, never this file, because DuckDB allows one writer per database file and
parallel partitions would fight over its lock. Refreshing the views is cheap (no data is copied)
and is the only write the pipeline makes here, besides dbt's.

DuckDB's own lock is per process and fails at once ("Could not set lock on file") rather than
waiting, and a read-only connection cannot open while another process writes. So every writer
(:func:`refresh`, dbt) holds the ``catalog`` file lock exclusively and every reader
(:func:`reading`) holds it shared: two runs, or a search during a run, wait their turn instead of
failing. Connections also retry DuckDB's lock error for a while, for writers outside this package.
A catalog that DuckDB cannot open is only views and dbt's tables, all derived: the refresh sets it
aside and builds a new one (dbt then rebuilds its tables), and a reader says to re-materialise.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb

from hotdog_dagster.core.io.faults import fault_point
from hotdog_dagster.core.io.locks import READ_WAIT_S, WRITE_WAIT_S, file_lock, lock_path
from hotdog_dagster.core.io.store import CorruptFile, Store

log = logging.getLogger(__name__)

#: What a reader of an unreadable catalog is told to re-materialise.
CATALOG_ASSETS = "clean_images/search_items (the catalog step of whole_set, or `hotdog run`)"
_LOCKED = re.compile(r"Could not set lock on file|Conflicting lock", re.I)
_DAMAGED = re.compile(r"not a valid DuckDB database file|checksum|Corrupt database|SerializationException", re.I)
_PARQUET = re.compile(r"(?P<path>/[^\s\"']*/tables/(?P<table>[^/\s\"']+)/(?P<part>[^/\s\"']+)\.parquet)")


def catalog_lock(store: Store) -> Path:
    return lock_path(store.root, "catalog")


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


#: The views the catalog step derives from the tables (each is a Dagster asset of that name).
DERIVED_VIEWS = ("clean_images", "search_items")

#: What survives cleaning; everything downstream (labels, search, the walk) reads through it.
CLEAN_IMAGES_SQL = """
CREATE OR REPLACE VIEW clean_images AS
SELECT i.* FROM images AS i JOIN duplicate_groups AS g USING (id) WHERE g.keep
"""

#: Per-image tables joined into search_items, in order; a column already present is not repeated.
_PER_IMAGE = (("image_quality", "q"), ("duplicate_groups", "g"), ("label_scores", "s"))


def search_items_sql(con: duckdb.DuckDBPyConnection, tables: set[str]) -> str:
    """One row per image with every filterable column: the image's own, its cleaning flags, its label scores."""
    seen = {r[0] for r in con.execute("DESCRIBE images").fetchall()}
    select, joins = ["i.*"], []
    for table, alias in _PER_IMAGE:
        if table not in tables:
            continue
        cols = [r[0] for r in con.execute(f"DESCRIBE {_quote_ident(table)}").fetchall() if r[0] not in seen]
        seen.update(cols)
        select += [f"{alias}.{_quote_ident(c)}" for c in cols]
        joins.append(f"LEFT JOIN {_quote_ident(table)} AS {alias} USING (id)")
    return f"CREATE OR REPLACE VIEW search_items AS SELECT {', '.join(select)} FROM images AS i {' '.join(joins)}"


def table_sources(store: Store) -> dict[str, str]:
    """Table name -> the Parquet file or glob behind it, for every table under ``tables/``."""
    sources: dict[str, str] = {}
    if store.tables_dir.exists():
        for entry in sorted(store.tables_dir.iterdir()):
            if entry.is_dir() and any(entry.glob("*.parquet")):
                sources[entry.name] = store.table_glob(entry.name)
            elif entry.suffix == ".parquet" and not entry.name.startswith("."):
                sources[entry.stem] = str(entry)
    return sources


def refresh(store: Store) -> dict[str, int]:
    """(Re)create one view per table under ``tables/`` and the derived views; returns each view's row count.

    Holds the ``catalog`` lock exclusively. An unreadable catalog is set aside (``catalog.duckdb.corrupt-*``)
    and rebuilt; an unreadable Parquet file is a :class:`CorruptFile` naming it and its table's asset.
    """
    store.root.mkdir(parents=True, exist_ok=True)
    with file_lock(catalog_lock(store), what=f"the catalog {store.catalog_path}"):
        try:
            return _refresh(store)
        except CorruptFile as exc:
            if exc.path != store.catalog_path:
                raise
            aside = set_aside(store)
            log.warning("%s; set it aside as %s and built a new catalog (dbt rebuilds its tables)", exc, aside)
            return _refresh(store)


def _refresh(store: Store) -> dict[str, int]:
    sources = table_sources(store)
    counts: dict[str, int] = {}
    with _connect(store, read_only=False, wait=WRITE_WAIT_S) as con:
        _probe(store, con)
        for name, glob in sources.items():
            fault_point("catalog", f"view {name}")
            con.execute(
                f"CREATE OR REPLACE VIEW {_quote_ident(name)} AS "
                f"SELECT * FROM read_parquet({_quote_literal(glob)}, union_by_name = true)"
            )
            counts[name] = int(_count(con, name))
        if {"images", "duplicate_groups"} <= set(sources):
            con.execute(CLEAN_IMAGES_SQL)
            counts["clean_images"] = int(_count(con, "clean_images"))
        if "images" in sources:
            con.execute(search_items_sql(con, set(sources)))
            counts["search_items"] = int(_count(con, "search_items"))
    fault_point("catalog", "refreshed")
    return counts


def _count(con: duckdb.DuckDBPyConnection, view: str) -> int:
    """Rows of a view; a Parquet file it cannot read becomes a CorruptFile naming the file and its table."""
    try:
        return con.execute(f"SELECT count(*) FROM {_quote_ident(view)}").fetchone()[0]
    except duckdb.Error as exc:
        m = _PARQUET.search(str(exc))
        if m:
            raise CorruptFile(Path(m["path"]), m["table"], m["part"], f"DuckDB: {str(exc).splitlines()[0]}") from None
        raise


def _probe(store: Store, con: duckdb.DuckDBPyConnection) -> None:
    """Touch every table the catalog stores (dbt's), so damage shows here rather than half way through."""
    try:
        tables = con.execute("SELECT table_name FROM duckdb_tables() WHERE NOT temporary").fetchall()
        for (name,) in tables:
            con.execute(f"SELECT count(*) FROM {_quote_ident(name)}").fetchone()
    except duckdb.Error as exc:
        if _DAMAGED.search(str(exc)):
            raise CorruptFile(store.catalog_path, None, None, str(exc).splitlines()[0], _REMEDY) from None
        raise


_REMEDY = f"re-materialise {CATALOG_ASSETS}, which builds a new catalog"


def set_aside(store: Store) -> Path:
    """Move an unreadable catalog (and its write-ahead log) out of the way, keeping it for inspection."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = store.catalog_path.with_name(f"{store.catalog_path.name}.corrupt-{stamp}-{os.getpid()}")
    os.replace(store.catalog_path, aside)
    wal = store.catalog_path.with_name(store.catalog_path.name + ".wal")
    if wal.exists():
        os.replace(wal, aside.with_name(aside.name + ".wal"))
    return aside


@contextlib.contextmanager
def _connect(store: Store, read_only: bool, wait: float) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection, retrying DuckDB's lock error (a writer outside our lock) for up to ``wait`` s."""
    con = _open(store, read_only, wait)
    try:
        yield con
    finally:
        con.close()


def _open(store: Store, read_only: bool, wait: float) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + wait
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(store.catalog_path), read_only=read_only)
        except duckdb.Error as exc:
            text = str(exc)
            if _DAMAGED.search(text):
                raise CorruptFile(store.catalog_path, None, None, text.splitlines()[0], _REMEDY) from None
            if not _LOCKED.search(text) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def connect(store: Store, read_only: bool = True, wait: float = READ_WAIT_S) -> duckdb.DuckDBPyConnection:
    """A connection to the catalog; read-only by default so readers never take the writer's lock.

    Prefer :func:`reading`, which also waits for a refresh or a dbt build in progress.
    """
    if not store.catalog_path.exists():
        raise FileNotFoundError(f"no catalog at {store.catalog_path}; run the pipeline first (`hotdog run`)")
    return _open(store, read_only, wait)


@contextlib.contextmanager
def reading(store: Store, wait: float = READ_WAIT_S) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection held with the ``catalog`` lock shared: waits while a writer works."""
    if not store.catalog_path.exists():
        raise FileNotFoundError(f"no catalog at {store.catalog_path}; run the pipeline first (`hotdog run`)")
    with file_lock(catalog_lock(store), shared=True, wait=wait, what=f"the catalog {store.catalog_path}"):
        con = connect(store, read_only=True, wait=wait)
        try:
            yield con
        finally:
            con.close()
