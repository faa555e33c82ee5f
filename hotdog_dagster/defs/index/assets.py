"""``image_index``: the FAISS index over every partition's vectors (not a table: files under ``index/``)."""

import dagster as dg

from hotdog_dagster.core.search import index
from hotdog_dagster.resources import IndexResource, StoreResource


@dg.asset(
    deps=["embeddings"],
    group_name="index",
    kinds={"faiss"},
    automation_condition=dg.AutomationCondition.eager(),
)
def image_index(store: StoreResource, index_settings: IndexResource) -> dg.MaterializeResult:
    """Adds new partitions and drops changed or deleted ones, so a batch costs its own size, not the set's."""
    info = index.update_from_store(store.store(), kind=index_settings.kind, rebuild=index_settings.rebuild)
    meta = index.read_meta(store.store()) or {}
    return dg.MaterializeResult(
        metadata={
            "vectors": info.vectors,
            "dimension": info.dim,
            "index": info.kind,
            "partitions": info.partitions,
            "added": int(meta.get("added", 0)),
            "removed": int(meta.get("removed", 0)),
            "full_rebuild": bool(meta.get("full_rebuild", True)),
            "build_seconds": round(info.build_seconds, 3),
            "path": dg.MetadataValue.path(str(store.store().index_dir / "images.faiss")),
        }
    )
