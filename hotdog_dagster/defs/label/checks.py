"""Checks beside the label scores they guard."""

import dagster as dg

from hotdog_dagster.core.labels.scoring import fingerprint
from hotdog_dagster.defs.shared import unreadable_fails_the_check
from hotdog_dagster.resources import LabelsResource, StoreResource


@dg.asset_check(asset="label_set", description="every partition was scored with the current label set")
@unreadable_fails_the_check
def scores_use_current_label_set(store: StoreResource, labels: LabelsResource) -> dg.AssetCheckResult:
    current = fingerprint(labels.label_set())
    table = store.store().read_table("label_set", columns=["partition", "fingerprint"])
    used = (
        {}
        if table is None
        else dict(zip(*(table.column(c).to_pylist() for c in ("partition", "fingerprint")), strict=True))
    )
    stale = sorted(p for p, fp in used.items() if fp != current)
    return dg.AssetCheckResult(
        passed=not stale,
        metadata={
            "current_fingerprint": current,
            "partitions": len(used),
            "stale_partitions": len(stale),
            "examples": stale[:5],
            "fix": "backfill label_scores over every partition (UI: Materialize all partitions)",
        },
    )
