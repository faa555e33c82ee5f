"""``catalog``: DuckDB views over the Parquet tables (the only pipeline write to catalog.duckdb)."""

import dagster as dg

from hotdog_dagster.assets.embeddings import image_embeddings
from hotdog_dagster.assets.index import image_index
from hotdog_dagster.assets.ingest import raw_images
from hotdog_dagster.assets.labels import label_scores
from hotdog_dagster.assets.quality import image_quality
from hotdog_dagster.core.io import catalog as catalog_core
from hotdog_dagster.resources import StoreResource


@dg.asset(
    deps=[raw_images, image_embeddings, image_index, image_quality, label_scores],
    group_name="index",
    kinds={"duckdb"},
    pool="duckdb",
    automation_condition=dg.AutomationCondition.eager(),
)
def catalog(store: StoreResource) -> dg.MaterializeResult:
    """In the `duckdb` pool (limit 1) because DuckDB allows a single writer per file."""
    counts = catalog_core.refresh(store.store())
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(store.store().catalog_path)),
            **{f"rows_{name}": n for name, n in counts.items()},
        }
    )
