"""Checks beside the keyword index they guard."""

import dagster as dg

from hotdog_dagster.core.search import keyword
from hotdog_dagster.defs.shared import unreadable_fails_the_check
from hotdog_dagster.resources import StoreResource


@dg.asset_check(
    asset="keyword_index",
    description="the keyword index holds exactly the ids of the images table (a stale index would hide or invent hits)",
)
@unreadable_fails_the_check
def keyword_index_matches_images(store: StoreResource) -> dg.AssetCheckResult:
    s = store.store()
    images = s.read_table("images", columns=["id"])
    expected = set(images.column("id").to_pylist()) if images is not None else set()
    indexed = set(keyword.load(s).ids.tolist())
    missing, extra = sorted(expected - indexed), sorted(indexed - expected)
    return dg.AssetCheckResult(
        passed=not missing and not extra,
        metadata={
            "missing": len(missing),
            "extra": len(extra),
            "missing_examples": dg.MetadataValue.json(missing[:10]),
            "extra_examples": dg.MetadataValue.json(extra[:10]),
        },
    )
