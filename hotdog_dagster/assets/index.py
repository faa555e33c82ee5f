"""``image_index``: the FAISS index over every partition's vectors."""

import dagster as dg

from hotdog_dagster.assets.embeddings import image_embeddings
from hotdog_dagster.core.search import index
from hotdog_dagster.resources import IndexResource, StoreResource


@dg.asset(
    deps=[image_embeddings], group_name="index", kinds={"faiss"}, automation_condition=dg.AutomationCondition.eager()
)
def image_index(store: StoreResource, index_settings: IndexResource) -> dg.MaterializeResult:
    """Rebuilt whole whenever a partition's embeddings change, so the id map can never drift."""
    info = index.build_from_store(store.store(), kind=index_settings.kind)
    return dg.MaterializeResult(
        metadata={
            "vectors": info.vectors,
            "dimension": info.dim,
            "index": info.kind,
            "partitions": info.partitions,
            "build_seconds": round(info.build_seconds, 3),
            "path": dg.MetadataValue.path(str(store.store().index_dir / "images.faiss")),
        }
    )
