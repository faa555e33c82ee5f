"""Run the jobs of ``definitions.py`` in process, on the Dagster instance the UI uses: what ``hotdog run`` does.

Each batch is one run of ``ingest_batch`` for its partition, then ``whole_set`` runs once. Runs land
in ``$DAGSTER_HOME`` (default ``$HOTDOG_HOME/dagster``), so ``dagster dev`` pointed at the same home
shows them, and a failed batch does not stop the others.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from hotdog_dagster.core.io import catalog
from hotdog_dagster.core.io.batches import BatchSpec, save_batch
from hotdog_dagster.core.io.store import Store, atomic_path, pid_alive
from hotdog_dagster.core.settings import Profile, WalkSettings

log = logging.getLogger(__name__)

#: Dagster's console logger at INFO: the assets' progress lines, without the per-event DEBUG chatter.
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
BATCHES = "batches"
WALKS = "walks"

DAGSTER_YAML = """\
# Written by hotdog: every pool (gpu, duckdb) admits one step at a time.
concurrency:
  pools:
    default_limit: 1
telemetry:
  enabled: false
"""


#: One instance per Dagster home for the life of the process. Dagster keeps only a weak reference to
#: the instance its definitions-state storage belongs to, so an instance that is dropped while another
#: is in use makes the next definitions load fail ("undefined DagsterInstance weakref").
_INSTANCES: dict[str, dg.DagsterInstance] = {}


def dagster_instance(store: Store) -> dg.DagsterInstance:
    """The persistent instance in ``$DAGSTER_HOME``, created under the data root when unset."""
    home = Path(os.environ.get("DAGSTER_HOME") or store.root / "dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        # atomically: a run killed while writing it, or a second process starting at that moment,
        # must never find half a file (every later run would fail to load the instance)
        with atomic_path(home / "dagster.yaml") as tmp:
            tmp.write_text(DAGSTER_YAML)
    if str(home) not in _INSTANCES:
        _INSTANCES[str(home)] = dg.DagsterInstance.from_config(str(home))
    return _INSTANCES[str(home)]


def register_batches(store: Store, instance: dg.DagsterInstance, specs: list[BatchSpec]) -> None:
    """Write each batch's manifest, then add its partition: the UI can then (re)materialise it by key."""
    for spec in specs:
        save_batch(store, spec)
    existing = set(instance.get_dynamic_partitions(BATCHES))
    new = [s.key for s in specs if s.key not in existing]
    if new:
        instance.add_dynamic_partitions(BATCHES, new)


def register_walk(store: Store, instance: dg.DagsterInstance, settings: WalkSettings) -> None:
    """Save the walk's definition beside the data, then add its partition (the UI can re-run it by name)."""
    from hotdog_dagster.core.walk.definition import save_walk

    save_walk(store, settings)
    if settings.name not in set(instance.get_dynamic_partitions(WALKS)):
        instance.add_dynamic_partitions(WALKS, [settings.name])


def run_walk(
    store: Store, profile: Profile, settings: WalkSettings, on_step: Callable[[StepDone], None] | None = None
) -> tuple[bool, str]:
    """Register and materialise one named walk; returns (success, the failure in one line or '')."""
    from hotdog_dagster.definitions import build_definitions

    instance = dagster_instance(store)
    recover_abandoned_runs(instance)
    register_walk(store, instance, settings)
    defs = build_definitions(profile, home=str(store.root))
    ok, run_id = execute(defs, "walk", instance, settings.name, on_step, home=str(store.root))
    if ok:
        execute(
            defs, "refresh_catalog", instance, None, on_step, home=str(store.root)
        )  # the walk's table becomes a view too
    return ok, "" if ok else failure_message(instance, run_id)


@dataclass
class StepDone:
    """One finished step, as the progress display sees it."""

    job: str
    partition: str | None
    step: str
    ok: bool
    seconds: float
    metadata: dict[str, Any]


@dataclass
class RunSummary:
    home: str
    dagster_home: str
    partitions: list[str]
    failed: dict[str, str] = field(default_factory=dict)
    tables: dict[str, int] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    """The user's exception of the first failed step, in one line (not Dagster's wrapper)."""
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None:
            continue
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            err = event.step_failure_data.error
            while err.cause is not None and err.cls_name == "DagsterExecutionStepExecutionError":
                err = err.cause
            return f"{event.step_key}: {err.message.strip().splitlines()[0]}"
        if event.event_type == dg.DagsterEventType.RUN_FAILURE and event.event_specific_data:
            err = getattr(event.event_specific_data, "error", None)
            if err is not None:
                return err.message.strip().splitlines()[0]
    return f"run {run_id} failed (see it in the Dagster UI)"


def _watch(instance: dg.DagsterInstance, run_id: str, job: str, partition: str | None, on_step, stop) -> None:
    """Report each step as it finishes, by reading the run's event log (the run executes in another thread)."""
    cursor = None  # read only what is new since the last poll, and only the kinds of event used here
    kinds = {
        dg.DagsterEventType.STEP_START,
        dg.DagsterEventType.ASSET_MATERIALIZATION,
        dg.DagsterEventType.STEP_SUCCESS,
        dg.DagsterEventType.STEP_FAILURE,
    }
    started: dict[str, float] = {}
    metadata: dict[str, dict[str, Any]] = {}
    while True:
        finished = stop.is_set()
        page = instance.get_records_for_run(run_id, cursor=cursor, of_type=kinds)
        cursor = page.cursor
        for entry in (r.event_log_entry for r in page.records):
            event = entry.dagster_event
            if event.event_type == dg.DagsterEventType.STEP_START:
                started[event.step_key] = entry.timestamp
            elif event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
                mat = event.step_materialization_data.materialization
                md = metadata.setdefault(event.step_key, {})
                md.update({k: getattr(v, "value", v) for k, v in mat.metadata.items()})
            else:
                seconds = entry.timestamp - started.get(event.step_key, entry.timestamp)
                on_step(
                    StepDone(
                        job, partition, event.step_key, event.is_step_success, seconds, metadata.get(event.step_key, {})
                    )
                )
        if finished and not page.has_more:
            return
        if not page.has_more:
            time.sleep(0.2)


#: Runs this process starts say which process and home they belong to, so the next `hotdog run` can
#: tell a run whose process was killed from one that is still going (:func:`recover_abandoned_runs`).
PID_TAG, HOST_TAG, HOME_TAG = "hotdog/pid", "hotdog/host", "hotdog/home"
_UNFINISHED = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def recover_abandoned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark runs whose ``hotdog`` process died (kill -9, OOM, a reboot) as failed and free their pool slots.

    An in-process run that is killed never reports its end: it stays STARTED in the UI, and the
    slot it held in a pool (``gpu``, ``duckdb``: one step at a time) stays claimed, so the next run
    that needs that pool waited for ever (found by the reliability suite: a kill during embedding
    hung every later run). Only runs started by ``hotdog`` on this host whose process no longer
    exists are touched; runs of the UI or of a live process are left alone. Returns their ids.
    """
    host, recovered = socket.gethostname(), []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=_UNFINISHED, tags={"hotdog/cli": "run"})):
        pid = int(run.tags.get(PID_TAG) or 0)
        if run.tags.get(HOST_TAG) != host or not pid or pid == os.getpid() or pid_alive(pid):
            continue
        message = f"abandoned: the hotdog process (pid {pid}) that ran it ended without finishing it"
        instance.report_run_failed(run, message=message)
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        log.warning("run %s of %s: %s; marked failed, its pool slots freed", run.run_id, run.job_name, message)
        recovered.append(run.run_id)
    return recovered


def execute(
    defs: dg.Definitions,
    job_name: str,
    instance: dg.DagsterInstance,
    partition: str | None = None,
    on_step: Callable[[StepDone], None] | None = None,
    home: str = "",
) -> tuple[bool, str]:
    """Execute one job of ``defs`` in process (one run on ``instance``); returns (success, run id)."""
    job = defs.resolve_job_def(job_name)
    run_id = str(uuid.uuid4())
    stop = threading.Event()
    watcher = None
    if on_step is not None:
        watcher = threading.Thread(
            target=_watch, args=(instance, run_id, job_name, partition, on_step, stop), daemon=True
        )
        watcher.start()
    try:
        result = job.execute_in_process(
            run_config=RUN_CONFIG,
            instance=instance,
            partition_key=partition,
            raise_on_error=False,
            run_id=run_id,
            tags={"hotdog/cli": "run", PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname(), HOME_TAG: home},
        )
    finally:
        stop.set()
        if watcher is not None:
            watcher.join()
    return result.success, run_id


def run_pipeline(
    store: Store,
    profile: Profile,
    specs: list[BatchSpec],
    on_step: Callable[[StepDone], None] | None = None,
    on_failure: Callable[[str, str], None] | None = None,
    walk: bool = True,
) -> RunSummary:
    """Materialise every batch in ``specs`` with ``ingest_batch``, then ``whole_set``, then the profile's walk."""
    from hotdog_dagster.core.labels.scoring import LabelSet
    from hotdog_dagster.core.model.encoder import ModelSpec
    from hotdog_dagster.dbt_project import prepare_dbt

    ModelSpec.parse(profile.model.name).checkpoint()  # a bad model spec fails here, before any work
    LabelSet.build(profile.labels.labels, profile.labels.templates)
    prepare_dbt()
    from hotdog_dagster.definitions import build_definitions

    defs = build_definitions(profile, home=str(store.root))
    instance = dagster_instance(store)
    recover_abandoned_runs(instance)
    register_batches(store, instance, specs)
    home = str(store.root)
    summary = RunSummary(
        home=str(store.root), dagster_home=str(instance.root_directory), partitions=[s.key for s in specs]
    )

    def step_done(step: StepDone) -> None:
        summary.stage_seconds[step.step] = summary.stage_seconds.get(step.step, 0.0) + step.seconds
        if on_step:
            on_step(step)

    for spec in specs:
        ok, run_id = execute(defs, "ingest_batch", instance, spec.key, step_done, home=home)
        if not ok:
            summary.failed[spec.key] = failure_message(instance, run_id)
            if on_failure:
                on_failure(spec.key, summary.failed[spec.key])
    ok, run_id = execute(defs, "whole_set", instance, None, step_done, home=home)
    if not ok:
        summary.failed["whole_set"] = failure_message(instance, run_id)
        if on_failure:
            on_failure("whole_set", summary.failed["whole_set"])
    elif walk:  # the profile's walk (the sketch world's faces by default), once the set is clean and indexed
        register_walk(store, instance, profile.walk)
        ok, run_id = execute(defs, "walk", instance, profile.walk.name, step_done, home=home)
        if not ok:
            key = f"walk {profile.walk.name}"
            summary.failed[key] = failure_message(instance, run_id)
            if on_failure:
                on_failure(key, summary.failed[key])
        else:
            execute(
                defs, "refresh_catalog", instance, None, step_done, home=home
            )  # the walk's table becomes a view too
    if store.catalog_path.exists():
        with catalog.reading(store) as con:
            views = [
                r[0]
                for r in con.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
                ).fetchall()
            ]
            summary.tables = {v: int(con.execute(f'SELECT count(*) FROM "{v}"').fetchone()[0]) for v in sorted(views)}
    summary.paths = {
        "catalog": str(store.catalog_path),
        "index": str(store.index_dir / "images.faiss"),
        "images": str(store.images_dir),
        "tables": str(store.tables_dir),
    }
    return summary
