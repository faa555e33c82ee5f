"""hotdog_dagster: tag and query images at scale with OpenCLIP, FAISS, DuckDB and dbt, as Dagster assets.

The package root exposes the search API; importing it does not load Dagster or torch.
"""

from hotdog_dagster.core.io.store import Store

__all__ = ["Modifier", "Part", "Query", "Searcher", "Store", "search"]


def __getattr__(name: str):
    """Load the search engine (FAISS, DuckDB, torch) only when it is asked for."""
    if name in ("Part", "Query", "Searcher", "Hit", "QueryError", "Modifier"):
        from hotdog_dagster.core.search import engine as _search

        return getattr(_search, name)
    raise AttributeError(name)


def search(query: str, home: str | None = None, **options: object) -> list:
    """One text query against ``home`` (default ``$HOTDOG_HOME``): ``search("a face", limit=5)``."""
    from hotdog_dagster.core.search.engine import Part, Query, Searcher

    with Searcher.open(Store(home)) as s:
        return s.search(Query(parts=(Part("text", query),), **options))  # type: ignore[arg-type]
