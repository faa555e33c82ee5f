"""Checks beside the cleaning tables they guard."""

import dagster as dg

from hotdog_dagster.core.clean import checks
from hotdog_dagster.defs.shared import unreadable_fails_the_check
from hotdog_dagster.resources import StoreResource


@dg.asset_check(asset="image_quality", description="the blank flags have exactly one row per image")
@unreadable_fails_the_check
def quality_covers_every_image(store: StoreResource) -> dg.AssetCheckResult:
    s = store.store()
    result = checks.covers(s.read_table("images", columns=["id"]), s.read_table("image_quality", columns=["id"]))
    return dg.AssetCheckResult(passed=result.passed, metadata=result.metadata)


@dg.asset_check(asset="duplicate_groups", description="the duplicate groups have exactly one row per image")
@unreadable_fails_the_check
def groups_cover_every_image(store: StoreResource) -> dg.AssetCheckResult:
    s = store.store()
    result = checks.covers(s.read_table("images", columns=["id"]), s.read_table("duplicate_groups", columns=["id"]))
    return dg.AssetCheckResult(passed=result.passed, metadata=result.metadata)
