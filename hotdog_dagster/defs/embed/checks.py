"""Checks beside the embeddings they guard."""

import dagster as dg

from hotdog_dagster.core.clean import checks
from hotdog_dagster.defs.shared import unreadable_fails_the_check
from hotdog_dagster.resources import StoreResource


@dg.asset_check(asset="embeddings", description="every vector is unit-norm and finite")
@unreadable_fails_the_check
def vectors_are_unit_norm(store: StoreResource) -> dg.AssetCheckResult:
    result = checks.unit_norm(store.store().read_table("embeddings", columns=["id", "vector"]))
    return dg.AssetCheckResult(passed=result.passed, metadata=result.metadata)
