"""How the whole-set assets follow the batches: once per wave of new batches, never once per partition.

Every asset that is not partitioned (the index, duplicate groups, the catalog's views, the dbt models)
gets :func:`whole_set_condition`: Dagster's ``eager`` condition plus one clause, *no batch step in
progress anywhere*. Eager alone waits only for an asset's direct parents, so the index (whose parent,
``embeddings``, is done early in a batch run) would rebuild while cleaning and labels still run, and
again after them; with the clause the whole set waits until every queued or running batch run and
every unfinished backfill is done, then rebuilds in one run; and not before every per-batch table
has at least one partition (one batch's ``raw_images`` alone would start a rebuild that reads
tables nobody has written yet). Eager's "no missing parent" clause keeps
whole-set parents (dbt never runs before the catalog's views exist) but ignores batch partitions: a
batch that keeps failing (the schedule gives up on it) must not hold the whole set back for ever; the
blocking index check still reports images without vectors.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence

import dagster as dg

AC = dg.AutomationCondition


def whole_set_condition(batch_keys: Sequence[dg.AssetKey]) -> dg.AutomationCondition:
    """Eager, after every batch step in progress (``batch_keys``: every per-batch asset) has finished."""
    per_batch = dg.AssetSelection.assets(*batch_keys)
    busy = functools.reduce(operator.or_, [AC.asset_matches(k, AC.in_progress()) for k in batch_keys])
    # Every per-batch table exists (some partition of each is materialised): one partition's raw_images
    # alone must not start a rebuild whose catalog and dbt read tables no batch has written yet.
    landed = functools.reduce(operator.and_, [AC.asset_matches(k, ~AC.missing()) for k in batch_keys])
    return (
        AC.eager().replace("any_deps_missing", AC.any_deps_missing().ignore(per_batch))
        & landed.with_label("every per-batch table written")
        & ~busy.with_label("any batch step in progress")
    ).with_label("after each wave of batches")


#: Evaluates the conditions, on by default (Dagster's implicit default sensor starts stopped); the daemon runs it.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation_condition_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Rebuilds the whole-set assets (index, duplicate groups, catalog, dbt) after batches land.",
)


def follow_batches(assets: list[dg.AssetsDefinition], batches: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """Give every unpartitioned asset :func:`whole_set_condition`, in one place, so a new stage's asset gets
    it too. Assets with partitions of their own (the walks) keep whatever their stage says."""
    batch_keys = [k for a in assets if a.partitions_def == batches for k in a.keys]
    condition = whole_set_condition(batch_keys)

    def whole_set(spec: dg.AssetSpec) -> dg.AssetSpec:
        return spec if spec.partitions_def is not None else spec.replace_attributes(automation_condition=condition)

    return [a if a.partitions_def is not None else a.map_asset_specs(whole_set) for a in assets]
