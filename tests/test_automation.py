"""Schedules, backfill policies, GPU placement and the whole set following the batches, on real instances."""

import json
import os
import time
from pathlib import Path

import dagster as dg

from hotdog_dagster.core.io.batches import list_batches, plan_diffusion
from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.model.sketch import draw
from hotdog_dagster.core.settings import GenerateSettings, Profile, ScaleSettings
from hotdog_dagster.definitions import build_definitions, defs
from hotdog_dagster.defs.automation import executor_for, whole_set_condition
from hotdog_dagster.defs.automation.schedules import (
    SCHEDULE_NAME,
    SCHEDULE_TAG,
    build_batch_schedule,
    plan_partitions,
)
from hotdog_dagster.defs.ingest.sensors import BATCH_JOB
from hotdog_dagster.defs.shared import BATCH_BACKFILL, GPU_POOL, GPU_QUEUE, batches
from hotdog_dagster.resources import StoreResource, WatchResource

GPU_STEPS = {"image_embeddings", "label_scores"}


def _graph():
    return defs.resolve_asset_graph()


def test_every_per_batch_asset_shares_the_single_run_backfill_policy() -> None:
    """One policy for the whole job (a mix falls back to the smallest), single-run so --partition-range is legal."""
    graph = _graph()
    per_batch = [graph.get(k) for k in graph.get_all_asset_keys() if graph.get(k).partitions_def == batches]
    assert per_batch
    assert {n.backfill_policy for n in per_batch} == {BATCH_BACKFILL}
    assert {n.backfill_policy for n in per_batch} == {dg.BackfillPolicy.single_run()}


def test_gpu_steps_carry_the_pool_and_the_tags_executors_read() -> None:
    job = defs.resolve_job_def(BATCH_JOB)
    for node in job.graph.node_defs:
        tags = node.tags
        if node.name in GPU_STEPS:
            assert node.pools == {GPU_POOL}
            assert tags["dagster-celery/queue"] == GPU_QUEUE
            k8s = json.loads(tags["dagster-k8s/config"])  # op tag values other than strings are stored as JSON
            assert k8s["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
            assert k8s["pod_spec_config"]["node_selector"]
        else:  # CPU steps stay off the gpu queue and pool, so they run beside GPU steps
            assert "dagster-celery/queue" not in tags and GPU_POOL not in (node.pools or set())
    assert {n.name for n in job.graph.node_defs} >= GPU_STEPS


def test_whole_set_assets_follow_the_batches_and_automation_is_on_by_default() -> None:
    graph = _graph()
    whole = [graph.get(k) for k in graph.get_all_asset_keys() if graph.get(k).is_executable]
    whole = [n for n in whole if n.partitions_def is None]
    assert {"image_index", "duplicate_groups", "clean_images", "image_labels"} <= {
        n.key.to_user_string() for n in whole
    }
    batch_keys = [k for k in graph.get_all_asset_keys() if graph.get(k).partitions_def == batches]
    assert {n.automation_condition.get_label() for n in whole} == {whole_set_condition(batch_keys).get_label()}
    repo = defs.get_repository_def()
    assert repo.get_schedule_def(SCHEDULE_NAME).default_status == dg.DefaultScheduleStatus.RUNNING
    sensor = repo.get_sensor_def("automation_condition_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_the_profile_chooses_the_executor() -> None:
    names = {e: executor_for(ScaleSettings(executor=e)).name for e in ("in_process", "multiprocess", "celery", "k8s")}
    assert names == {"in_process": "in_process", "multiprocess": "multiprocess", "celery": "celery", "k8s": "k8s"}
    celery = build_definitions(Profile(scale=ScaleSettings(executor="celery"))).resolve_job_def(BATCH_JOB)
    assert celery.executor_def.name == "celery"


# -- the batch schedule ----------------------------------------------------------------------------


@dg.asset(partitions_def=batches, backfill_policy=BATCH_BACKFILL)
def part(context: dg.AssetExecutionContext) -> None:
    """A per-batch asset that fails for keys starting with 'bad'."""
    for key in context.partition_keys:
        if key.startswith("bad"):
            raise RuntimeError(f"{key} fails")


@dg.asset(deps=[part], partitions_def=batches, backfill_policy=BATCH_BACKFILL)
def part2() -> None:
    """A second per-batch step (as cleaning and labels follow embeddings)."""


WAVE = whole_set_condition([dg.AssetKey("part"), dg.AssetKey("part2")])


@dg.asset(deps=[part], automation_condition=WAVE)
def whole() -> None:
    """A whole-set asset downstream of the batches."""


@dg.asset(deps=[whole, part], automation_condition=WAVE)
def after_whole() -> None:
    """A whole-set asset downstream of another (as dbt is of the catalog's views)."""


TOY = dg.Definitions(
    assets=[part, part2, whole, after_whole], jobs=[dg.define_asset_job(BATCH_JOB, selection=[part, part2])]
)


def _run(instance: dg.DagsterInstance, key: str, scheduled: bool = False) -> bool:
    tags = {SCHEDULE_TAG: SCHEDULE_NAME} if scheduled else {}
    job = TOY.resolve_job_def(BATCH_JOB)
    return job.execute_in_process(instance=instance, partition_key=key, tags=tags, raise_on_error=False).success


def test_plan_runs_missing_and_failed_partitions_once_per_attempt_then_gives_up() -> None:
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(batches.name, ["ok-1", "bad-1", "new-1"])
        assert _run(instance, "ok-1")
        assert not _run(instance, "bad-1")  # failed outside the schedule: not counted as an attempt

        plan = plan_partitions(instance, ["ok-1", "bad-1", "new-1"], [dg.AssetKey("part")], max_attempts=2)
        assert plan.done == ["ok-1"] and plan.run == {"bad-1": 1, "new-1": 1}
        assert [r.run_key for r in plan.run_requests()] == ["bad-1#1", "new-1#1"]  # a key per partition and attempt

        assert not _run(instance, "bad-1", scheduled=True)
        assert _run(instance, "new-1", scheduled=True)
        plan = plan_partitions(instance, ["ok-1", "bad-1", "new-1"], [dg.AssetKey("part")], max_attempts=2)
        assert plan.run == {"bad-1": 2} and sorted(plan.done) == ["new-1", "ok-1"]

        assert not _run(instance, "bad-1", scheduled=True)
        plan = plan_partitions(instance, ["ok-1", "bad-1", "new-1"], [dg.AssetKey("part")], max_attempts=2)
        assert plan.run == {} and plan.gave_up == ["bad-1"]


def _write(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    past = time.time() - 60  # settled: not being copied any more
    for i, name in enumerate(names):
        draw(3, i, size=32).image.save(folder / name)
        os.utime(folder / name, (past, past))


def _tick(schedule: dg.ScheduleDefinition, instance: dg.DagsterInstance, resources: dict) -> list[dg.RunRequest]:
    """One evaluation; the context is closed after it (an open one leaves Dagster's state storage pointing
    at this instance after it is gone, and a later definitions load fails)."""
    with dg.build_schedule_context(instance=instance, resources=resources) as context:
        return schedule(context)


def test_schedule_tick_registers_new_files_and_requests_each_new_partition(home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    _write(folder, [f"a{i}.png" for i in range(5)])
    schedule = build_batch_schedule([dg.AssetKey("images")], ScaleSettings(schedule_cron="*/5 * * * *"))
    assert schedule.cron_schedule == "*/5 * * * *"
    resources = {"store": StoreResource(home=str(home)), "watch": WatchResource(folder=str(folder), chunk=3)}
    with dg.instance_for_test() as instance:
        first = _tick(schedule, instance, resources)
        keys = ["folder-incoming-00000", "folder-incoming-00001"]
        assert instance.get_dynamic_partitions(batches.name) == keys
        assert [(r.partition_key, r.run_key) for r in first] == [(k, f"{k}#1") for k in keys]

        _write(folder, ["b0.png"])
        second = _tick(schedule, instance, resources)
        # nothing ran yet, so the first two are still missing: requested again under the same run keys,
        # which the daemon drops as duplicates; the new file's partition joins them
        assert [r.run_key for r in second] == [f"{k}#1" for k in keys] + ["folder-incoming-00002#1"]


# -- the whole set follows the batches ----------------------------------------------------------


def _requested(instance: dg.DagsterInstance, cursor=None) -> tuple[dict[str, int], object]:
    """How many times each whole-set asset is requested on one evaluation of the conditions, and the cursor."""
    result = dg.evaluate_automation_conditions(defs=TOY, instance=instance, cursor=cursor)
    names = ("whole", "after_whole")
    return {n: result.get_num_requested(dg.AssetKey(n)) for n in names}, result.cursor


def test_whole_set_rebuilds_once_after_new_batches_even_with_a_failed_one() -> None:
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(batches.name, ["a", "b", "bad-c"])
        requested, cursor = _requested(instance)
        assert requested == {"whole": 0, "after_whole": 0}  # nothing landed yet: no rebuild of an empty set

        assert _run(instance, "a") and _run(instance, "b")
        assert not _run(instance, "bad-c")  # a failed batch does not hold the whole set back
        requested, cursor = _requested(instance, cursor)
        assert requested == {"whole": 1, "after_whole": 1}  # one run, in order: parent, then child

        requested, cursor = _requested(instance, cursor)
        assert requested == {"whole": 0, "after_whole": 0}  # handled: one rebuild for the wave


def test_whole_set_waits_while_any_batch_step_is_queued_or_running() -> None:
    """Even a step the asset does not read directly: ``whole`` reads ``part``, the queued run writes ``part2``."""
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(batches.name, ["a", "b"])
        requested, cursor = _requested(instance)
        assert _run(instance, "a") and _run(instance, "b")
        job = TOY.resolve_job_def(BATCH_JOB)
        queued = instance.create_run_for_job(
            job,
            tags={"dagster/partition": "b"},
            status=dg.DagsterRunStatus.NOT_STARTED,
            asset_selection={dg.AssetKey("part2")},
        )
        requested, cursor = _requested(instance, cursor)
        assert requested == {"whole": 0, "after_whole": 0}  # the wave is not over: wait for it

        instance.report_run_failed(queued)
        requested, cursor = _requested(instance, cursor)
        assert requested == {"whole": 1, "after_whole": 1}


def test_a_partition_range_is_one_run_over_every_partition() -> None:
    """What ``dagster asset materialize --partition-range a...c`` and a UI backfill do with the single-run policy."""
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(batches.name, ["a", "b", "c"])
        tags = {"dagster/asset_partition_range_start": "a", "dagster/asset_partition_range_end": "c"}
        result = dg.materialize([part], instance=instance, tags=tags)
        assert result.success
        assert sorted(m.partition for m in result.asset_materializations_for_node("part")) == ["a", "b", "c"]


def test_schedule_registers_the_next_generation_batch_once_the_previous_one_is_done(home: Path) -> None:
    generate = GenerateSettings(model="tiny-random", prompts=["a hot dog", "a cat"], seed=7)
    scale = ScaleSettings(generate_per_tick=4, generate_limit=10)
    schedule = build_batch_schedule([dg.AssetKey("images")], scale, generate)
    resources = {"store": StoreResource(home=str(home)), "watch": WatchResource()}
    with dg.instance_for_test() as instance:
        first = _tick(schedule, instance, resources)
        assert [r.partition_key for r in first] == ["diffusion-s7-0000000"]

        # not materialised yet: requested again under the same run key, and no second batch piles up
        again = _tick(schedule, instance, resources)
        assert [r.run_key for r in again] == ["diffusion-s7-0000000#1"]
        assert instance.get_dynamic_partitions(batches.name) == ["diffusion-s7-0000000"]

        for key, expected_next in [
            ("diffusion-s7-0000000", "diffusion-s7-0000004"),
            ("diffusion-s7-0000004", "diffusion-s7-0000008"),
        ]:
            instance.report_runless_asset_event(dg.AssetMaterialization("images", partition=key))
            assert [r.partition_key for r in _tick(schedule, instance, resources)] == [expected_next]

        specs = {s.key: s for s in list_batches(Store(home))}
        # the batches continue one stream: the same manifests as planning all 10 images at once
        assert [specs[s.key] for s in plan_diffusion(generate, 10, 4, first=0)] == list(specs.values())
        assert specs["diffusion-s7-0000008"].count == 2  # capped at generate_limit

        instance.report_runless_asset_event(dg.AssetMaterialization("images", partition="diffusion-s7-0000008"))
        result = _tick(schedule, instance, resources)
        assert isinstance(result, dg.SkipReason)  # at the limit: nothing more to generate


def test_changed_clean_settings_make_the_per_batch_cleaning_tables_stale() -> None:
    """Like the label set for labels: edges found with another threshold show stale, not current."""
    base = Profile()
    changed = base.model_copy(update={"clean": base.clean.model_copy(update={"near_threshold": 0.9})})
    old, new = (build_definitions(p).resolve_asset_graph() for p in (base, changed))
    for name in ("image_quality", "duplicate_edges"):
        assert old.get(dg.AssetKey(name)).code_version == base.clean.fingerprint()
        assert old.get(dg.AssetKey(name)).code_version != new.get(dg.AssetKey(name)).code_version
    for name in ("label_scores", "images", "embeddings"):  # other stages keep theirs
        assert old.get(dg.AssetKey(name)).code_version == new.get(dg.AssetKey(name)).code_version


def test_whole_set_waits_until_every_per_batch_table_has_been_written() -> None:
    """One partition's first step alone (raw_images from the UI) must not start a rebuild that reads
    tables no batch has written yet (dbt failed on the missing image_quality and label_set)."""
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(batches.name, ["a"])
        requested, cursor = _requested(instance)
        result = dg.materialize([part, part2], selection=[part], partition_key="a", instance=instance)
        assert result.success
        requested, cursor = _requested(instance, cursor)
        assert requested == {"whole": 0, "after_whole": 0}  # part2 has no partition yet

        assert dg.materialize([part, part2], selection=[part2], partition_key="a", instance=instance).success
        requested, cursor = _requested(instance, cursor)
        assert requested == {"whole": 1, "after_whole": 1}
