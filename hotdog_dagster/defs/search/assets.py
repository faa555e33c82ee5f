"""``keyword_index``: BM25 over every image's caption and prompt (a file under ``index/``, not a table)."""

import dagster as dg

from hotdog_dagster.core.search import keyword
from hotdog_dagster.resources import StoreResource


@dg.asset(
    # After image_index as well as images: the FAISS swap replaces index/ (carrying this file over),
    # so the two never write there at the same time.
    deps=["images", "image_index"],
    group_name="search",
    kinds={"numpy"},
    automation_condition=dg.AutomationCondition.eager(),
)
def keyword_index(store: StoreResource) -> dg.MaterializeResult:
    """Rebuilt over the whole set when any images partition changed: BM25's idf belongs to the whole set."""
    s = store.store()
    info = keyword.update_from_store(s)
    return dg.MaterializeResult(
        metadata={
            "documents": info.documents,
            "with_text": info.with_text,
            "terms": info.terms,
            "rebuilt": info.rebuilt,
            "build_seconds": round(info.seconds, 3),
            "path": dg.MetadataValue.path(str(keyword.path_of(s))),
        }
    )
