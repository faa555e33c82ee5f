"""``catalog``: DuckDB views over the Parquet tables plus ``clean_images`` and ``search_items``."""

import dagster as dg

from hotdog_dagster.core.io import catalog as catalog_core
from hotdog_dagster.resources import StoreResource

#: Every table the catalog exposes; the catalog step runs after any of them changes.
TABLES = [
    "images",
    "rejected",
    "thumbnails",
    "embeddings",
    "embedding_failures",
    "image_quality",
    "duplicate_edges",
    "duplicate_groups",
    "label_scores",
    "label_set",
]


@dg.multi_asset(
    name="catalog",
    specs=[
        dg.AssetSpec(
            "clean_images",
            deps=TABLES,
            description="View: the images cleaning keeps; labels, search and the walk read through it.",
            kinds={"duckdb"},
            automation_condition=dg.AutomationCondition.eager(),
        ),
        dg.AssetSpec(
            "search_items",
            deps=TABLES,
            description="View: one row per image with every filterable column (flags, groups, label scores).",
            kinds={"duckdb"},
            automation_condition=dg.AutomationCondition.eager(),
        ),
    ],
    group_name="catalog",
    can_subset=False,
    pool="duckdb",
)
def catalog(store: StoreResource):
    """In the `duckdb` pool (limit 1) with dbt, because DuckDB allows a single writer per file."""
    counts = catalog_core.refresh(store.store())
    meta = {
        "path": dg.MetadataValue.path(str(store.store().catalog_path)),
        **{f"rows_{name}": n for name, n in counts.items()},
    }
    for view in catalog_core.DERIVED_VIEWS:
        yield dg.MaterializeResult(asset_key=view, metadata={"rows": counts.get(view, 0), **meta})
