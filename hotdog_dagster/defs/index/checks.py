"""Checks beside the index they guard."""

import dagster as dg

from hotdog_dagster.core.clean import checks
from hotdog_dagster.core.search import index
from hotdog_dagster.defs.shared import unreadable_fails_the_check
from hotdog_dagster.resources import StoreResource


@dg.asset_check(
    asset="image_index",
    blocking=True,
    description="images, embeddings and the index hold the same ids (blocks everything downstream when not)",
)
@unreadable_fails_the_check
def index_matches_tables(store: StoreResource) -> dg.AssetCheckResult:
    s = store.store()
    result = checks.same_ids(
        s.read_table("images", columns=["id"]), s.read_table("embeddings", columns=["id"]), index.load(s).ids
    )
    return dg.AssetCheckResult(passed=result.passed, metadata=result.metadata)
