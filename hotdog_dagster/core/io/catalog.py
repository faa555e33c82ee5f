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
    """(Re)create one view per table under ``tables/`` and the derived views; returns each view's row count."""
    store.root.mkdir(parents=True, exist_ok=True)
    sources = table_sources(store)
    counts: dict[str, int] = {}
    with duckdb.connect(str(store.catalog_path)) as con:
        for name, glob in sources.items():
            con.execute(
                f"CREATE OR REPLACE VIEW {_quote_ident(name)} AS "
                f"SELECT * FROM read_parquet({_quote_literal(glob)}, union_by_name = true)"
            )
            counts[name] = int(con.execute(f"SELECT count(*) FROM {_quote_ident(name)}").fetchone()[0])
        if {"images", "duplicate_groups"} <= set(sources):
            con.execute(CLEAN_IMAGES_SQL)
            counts["clean_images"] = int(con.execute("SELECT count(*) FROM clean_images").fetchone()[0])
        if "images" in sources:
            con.execute(search_items_sql(con, set(sources)))
            counts["search_items"] = int(con.execute("SELECT count(*) FROM search_items").fetchone()[0])
    return counts


def connect(store: Store, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """A connection to the catalog; read-only by default so readers never take the writer's lock."""
    if not store.catalog_path.exists():
        raise FileNotFoundError(f"no catalog at {store.catalog_path}; run the pipeline first (`hotdog run`)")
    return duckdb.connect(str(store.catalog_path), read_only=read_only)
