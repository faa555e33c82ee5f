"""How the whole-set assets follow the batches: once per wave of new partitions, never once per partition.

Every asset that is not partitioned by batch (the index, duplicate groups, the catalog's views, the dbt
models) gets :data:`WHOLE_SET_CONDITION`: Dagster's ``eager`` condition, which already waits while any
upstream partition is in a queued or running run or in an unfinished backfill, so a backfill of a
hundred partitions, or a schedule tick that starts a hundred runs, ends in one rebuild. Eager's
"no missing dependency" clause is left out: a batch that keeps failing (the schedule gives up on it)
must not hold the whole set back for ever; the index check still reports any images without vectors.
"""

from __future__ import annotations

import dagster as dg

WHOLE_SET_CONDITION = (
    dg.AutomationCondition.eager()
    .without(~dg.AutomationCondition.any_deps_missing())
    .with_label("after new batches (eager, missing batches allowed)")
)

#: Evaluates the conditions, on by default (Dagster's implicit default sensor starts stopped); the daemon runs it.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation_condition_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Rebuilds the whole-set assets (index, duplicate groups, catalog, dbt) after batches land.",
)


def follow_batches(assets: list[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """Give every whole-set (unpartitioned) asset :data:`WHOLE_SET_CONDITION`, in one place, so a new stage's
    asset gets it too. Assets with partitions of their own (the walks) keep whatever their stage says."""

    def whole_set(spec: dg.AssetSpec) -> dg.AssetSpec:
        if spec.partitions_def is not None:
            return spec
        return spec.replace_attributes(automation_condition=WHOLE_SET_CONDITION)

    return [a if a.partitions_def is not None else a.map_asset_specs(whole_set) for a in assets]
