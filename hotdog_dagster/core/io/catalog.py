"""``catalog.duckdb``: DuckDB views over the Parquet tables, so SQL (and dbt) sees one database.

Assets write Parquet, never this file, because DuckDB allows one writer per database file and
parallel partitions would fight over its lock. Refreshing the views is cheap (no data is copied)
and is the only write the pipeline makes here, besides dbt's.
"""

from __future__ import annotations

import duckdb

from hotdog_dagster.core.io.store import Store


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


#: What survives cleaning; everything downstream (labels, search, the walk) reads through it.
CLEAN_IMAGES_SQL = """
CREATE OR REPLACE VIEW clean_images AS
SELECT i.* FROM images AS i JOIN image_quality AS q USING (id) WHERE q.keep
"""


def search_items_sql(tables: set[str]) -> str:
    """One row per image with every filterable column: the image's own, its quality flags, its label scores."""
    select, joins = ["i.*"], []
    if "image_quality" in tables:
        select.append("q.* EXCLUDE (id, partition)")
        joins.append("LEFT JOIN image_quality AS q USING (id)")
    if "label_scores" in tables:
        select.append("s.* EXCLUDE (id)")
        joins.append("LEFT JOIN label_scores AS s USING (id)")
    return f"CREATE OR REPLACE VIEW search_items AS SELECT {', '.join(select)} FROM images AS i {' '.join(joins)}"


def refresh(store: Store) -> dict[str, int]:
    """(Re)create one view per table under ``tables/``; returns the row count of each view."""
    store.root.mkdir(parents=True, exist_ok=True)
    sources: dict[str, str] = {}
    if store.tables_dir.exists():
        for entry in sorted(store.tables_dir.iterdir()):
            if entry.is_dir() and any(entry.glob("*.parquet")):
                sources[entry.name] = store.table_glob(entry.name)
            elif entry.suffix == ".parquet" and not entry.name.startswith("."):
                sources[entry.stem] = str(entry)
    counts: dict[str, int] = {}
    with duckdb.connect(str(store.catalog_path)) as con:
        for name, glob in sources.items():
            con.execute(
                f"CREATE OR REPLACE VIEW {_quote_ident(name)} AS "
                f"SELECT * FROM read_parquet({_quote_literal(glob)}, union_by_name = true)"
            )
            counts[name] = int(con.execute(f"SELECT count(*) FROM {_quote_ident(name)}").fetchone()[0])
        if {"images", "image_quality"} <= set(sources):
            con.execute(CLEAN_IMAGES_SQL)
            counts["clean_images"] = int(con.execute("SELECT count(*) FROM clean_images").fetchone()[0])
        if "images" in sources:
            con.execute(search_items_sql(set(sources)))
    return counts


def connect(store: Store, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """A connection to the catalog; read-only by default so readers never take the writer's lock."""
    if not store.catalog_path.exists():
        raise FileNotFoundError(f"no catalog at {store.catalog_path}; run the pipeline first (`hotdog run`)")
    return duckdb.connect(str(store.catalog_path), read_only=read_only)
