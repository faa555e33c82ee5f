"""The batch schedule: each tick registers new batches, then runs every partition that is missing or failed.

New batches are new files in the watched folder and, with ``scale.generate_per_tick``, the next
Stable Diffusion batch of the profile's run once the previous generation batch is done (so a slow
GPU never piles up unfinished generation partitions).

A scheduled partition backfill: one run of ``ingest_batch`` per partition that needs one, each with a
run key of (partition, attempt), so a tick never starts a partition twice and a failed partition is
retried on a later tick up to ``scale.max_attempts`` times. Partitions whose runs are queued or
running are left alone; a partition counts as done when every per-batch asset is materialised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import dagster as dg

from hotdog_dagster.core.io.batches import BatchSpec, list_batches, next_diffusion_batch, save_batch
from hotdog_dagster.core.io.watch import plan_new_files
from hotdog_dagster.core.settings import GenerateSettings, ScaleSettings
from hotdog_dagster.defs.ingest.sensors import BATCH_JOB
from hotdog_dagster.defs.shared import batches
from hotdog_dagster.resources import StoreResource, WatchResource

SCHEDULE_NAME = "batch_schedule"
PARTITION_TAG = "dagster/partition"
SCHEDULE_TAG = "dagster/schedule_name"


@dataclass
class PartitionPlan:
    """What one tick decided for each partition (the tick's log and the tests read it)."""

    run: dict[str, int] = field(default_factory=dict)  # partition -> attempt number of the run to start
    done: list[str] = field(default_factory=list)
    in_progress: list[str] = field(default_factory=list)
    gave_up: list[str] = field(default_factory=list)

    def run_requests(self) -> list[dg.RunRequest]:
        return [
            dg.RunRequest(partition_key=key, run_key=f"{key}#{attempt}", tags={"hotdog/attempt": str(attempt)})
            for key, attempt in self.run.items()
        ]


def register_new_batches(store: StoreResource, watch: WatchResource, instance: dg.DagsterInstance) -> list[BatchSpec]:
    """New files in the watched folder become manifests, then partitions (manifest first: a key is always runnable)."""
    if not watch.folder:
        return []
    specs = plan_new_files(store.store(), watch.folder, watch.chunk)
    for spec in specs:
        save_batch(store.store(), spec)
    if specs:
        instance.add_dynamic_partitions(batches.name, [s.key for s in specs])
    return specs


def register_next_generation(
    store: StoreResource,
    generate: GenerateSettings,
    scale: ScaleSettings,
    plan: PartitionPlan,
    instance: dg.DagsterInstance,
) -> BatchSpec | None:
    """The next generation batch, registered and added to ``plan`` when every earlier one is done (or given up)."""
    existing = list_batches(store.store())
    pending = set(plan.run) | set(plan.in_progress)
    if any(s.source == "diffusion" and s.key in pending for s in existing):
        return None
    spec = next_diffusion_batch(existing, generate, scale.generate_per_tick, limit=scale.generate_limit)
    if spec is None:
        return None
    save_batch(store.store(), spec)
    instance.add_dynamic_partitions(batches.name, [spec.key])
    plan.run[spec.key] = 1
    return spec


def plan_partitions(
    instance: dg.DagsterInstance,
    keys: Sequence[str],
    asset_keys: Sequence[dg.AssetKey],
    max_attempts: int,
    schedule_name: str = SCHEDULE_NAME,
) -> PartitionPlan:
    """Sort partitions into done, in progress, to run (with their attempt number) and given up."""
    status = {a: instance.get_status_by_partition(a, list(keys), batches) or {} for a in asset_keys}
    plan = PartitionPlan()
    for key in keys:
        states = [status[a].get(key) for a in asset_keys]
        if dg.AssetPartitionStatus.IN_PROGRESS in states:
            plan.in_progress.append(key)
        elif all(s == dg.AssetPartitionStatus.MATERIALIZED for s in states):
            plan.done.append(key)
        else:
            tried = instance.get_runs_count(
                dg.RunsFilter(job_name=BATCH_JOB, tags={PARTITION_TAG: key, SCHEDULE_TAG: schedule_name})
            )
            if tried >= max_attempts:
                plan.gave_up.append(key)
            else:
                plan.run[key] = tried + 1
    return plan


def build_batch_schedule(
    asset_keys: Sequence[dg.AssetKey], scale: ScaleSettings, generate: GenerateSettings | None = None
) -> dg.ScheduleDefinition:
    """The schedule over ``asset_keys`` (every per-batch asset), ticking at ``scale.schedule_cron``; on by default.

    ``generate`` (with ``scale.generate_per_tick`` above 0) makes each tick also register the next
    generation batch of that run.
    """
    generating = generate is not None and scale.generate_per_tick > 0
    what = "new files in watch.folder" + (
        f", and the next {scale.generate_per_tick}-image generation batch once the previous one is done"
        if generating
        else ""
    )

    @dg.schedule(
        name=SCHEDULE_NAME,
        job_name=BATCH_JOB,
        cron_schedule=scale.schedule_cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Registers new batches ({what}), then runs every batch partition that is "
        f"missing or failed, one run per partition, at most {scale.max_attempts} attempts each.",
    )
    def batch_schedule(
        context: dg.ScheduleEvaluationContext, store: StoreResource, watch: WatchResource
    ) -> list[dg.RunRequest] | dg.SkipReason:
        new = register_new_batches(store, watch, context.instance)
        keys = context.instance.get_dynamic_partitions(batches.name)
        plan = plan_partitions(context.instance, keys, asset_keys, scale.max_attempts)
        if generating:
            spec = register_next_generation(store, generate, scale, plan, context.instance)
            new += [spec] if spec else []
            keys = [*keys, *([spec.key] if spec else [])]
        context.log.info(
            f"{len(new)} new batch(es); {len(plan.run)} to run, {len(plan.in_progress)} in progress, "
            f"{len(plan.done)} done, {len(plan.gave_up)} given up after {scale.max_attempts} attempts"
            + (f" ({', '.join(plan.gave_up[:5])})" if plan.gave_up else "")
        )
        if not plan.run:
            return dg.SkipReason(f"all {len(keys)} batch partitions are materialised, in progress or given up")
        return plan.run_requests()

    return batch_schedule
