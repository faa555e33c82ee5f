"""The Celery deployment for real: PostgreSQL, Redis, two Celery workers and the Dagster daemon as processes.

``hotdog plan`` registers two batches; nothing else is asked of Dagster. The daemon's batch schedule
(ticking every minute here) starts one run per missing partition, the runs send their steps to Celery
(GPU steps to the ``gpu`` queue's worker, the rest to the default queue's), and the automation sensor
then rebuilds the whole set once. The servers are the system's packages (``scripts/setup.sh``); without
them the test is skipped with what to install, or fails when ``CI=true``. Everything is stopped at the
end, also on failure, and the test checks that no process or port is left.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.search import index
from hotdog_dagster.core.settings import IngestSettings, Profile, ScaleSettings
from hotdog_dagster.defs.automation.schedules import SCHEDULE_NAME
from hotdog_dagster.defs.shared import GPU_QUEUE
from hotdog_dagster.local_cluster import LocalCluster, marked_processes, missing_servers
from hotdog_dagster.pipeline import failure_message

pytestmark = pytest.mark.distributed

REPO = Path(__file__).resolve().parents[1]
#: A bound on each wait, so a broken deployment fails with its logs instead of hanging CI; not a speed claim.
WAIT_SECONDS = 900
IMAGES, PARTITION = 40, 20


def _require_servers() -> None:
    missing = missing_servers()
    if missing:
        message = f"{', '.join(missing)} not installed: run scripts/setup.sh (apt-get install {' '.join(missing)})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def _wait_for(what: str, done, cluster: LocalCluster, instance: dg.DagsterInstance) -> None:
    """Poll ``done`` (which may raise to fail early) until true; fail with the deployment's logs after the bound."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if done():
            return
        time.sleep(2)
    pytest.fail(f"{what}: not done after {WAIT_SECONDS} s; runs:\n{_runs(instance)}\n{cluster.logs()}")


def _workers_by_step(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """Step key -> the Celery worker's name, from the engine event the worker writes when it takes the step."""
    out = {}
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data = record.dagster_event.event_specific_data
        worker = data.metadata.get("Celery worker") if data is not None else None
        if worker is not None and record.dagster_event.step_key:
            out[record.dagster_event.step_key] = str(worker.value).split("@")[0]
    return out


def _runs(instance: dg.DagsterInstance) -> str:
    """Every run: job, status, what it selected and who started it (for failure messages)."""
    lines = []
    for r in reversed(instance.get_runs()):
        sel = sorted(k.to_user_string() for k in r.asset_selection or ())
        who = {
            k: v
            for k, v in r.tags.items()
            if k in ("dagster/schedule_name", "dagster/sensor_name", "dagster/partition")
        }
        lines.append(f"{r.job_name} {r.status.value} {who} {sel}")
    return "\n".join(lines)


def _failure(instance: dg.DagsterInstance, run_id: str) -> str:
    """The failed step's whole error (dbt's errors are in it), not only the first line."""
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        err = record.dagster_event.step_failure_data.error
        while err.cause is not None and err.cls_name == "DagsterExecutionStepExecutionError":
            err = err.cause
        return f"{record.dagster_event.step_key}: {err.message}\nruns:\n{_runs(instance)}"
    return failure_message(instance, run_id)


def _nothing_listens(port: int) -> bool:
    """No server accepts on the port any more (a bind test would trip over connections in TIME_WAIT)."""
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_schedule_celery_workers_and_automation_on_postgres_and_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _require_servers()
    profile = Profile(ingest=IngestSettings(sketch_size=64), scale=ScaleSettings(schedule_cron="* * * * *"))
    cluster = LocalCluster(tmp_path / "cluster", profile, REPO / "deploy" / "celery" / "dagster.yaml")
    with cluster:
        for name, value in cluster.env().items():
            monkeypatch.setenv(name, value)
        cluster.start_worker("gpu", [GPU_QUEUE])
        cluster.start_worker("cpu", ["dagster"])  # dagster-celery's default queue
        plan = subprocess.run(
            ["hotdog", "plan", "--source", "sketch", "--images", str(IMAGES), "--partition-size", str(PARTITION)],
            env=cluster.env(),
            capture_output=True,
            text=True,
        )
        assert plan.returncode == 0, plan.stderr
        cluster.start_daemon()

        with dg.DagsterInstance.from_config(str(cluster.dagster_home)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            keys = instance.get_dynamic_partitions("batches")
            assert len(keys) == IMAGES // PARTITION

            def batch_runs() -> list[dg.DagsterRun]:
                runs = instance.get_runs(dg.RunsFilter(tags={"dagster/schedule_name": SCHEDULE_NAME}))
                for run in runs:
                    if run.status == dg.DagsterRunStatus.FAILURE:
                        pytest.fail(f"scheduled run failed: {_failure(instance, run.run_id)}\n{cluster.logs()}")
                return runs

            def batches_done() -> bool:
                runs = batch_runs()
                return len(runs) == len(keys) and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)

            _wait_for("the schedule's runs of both batches", batches_done, cluster, instance)

            def whole_set_runs() -> list[dg.DagsterRun]:
                runs = instance.get_runs(dg.RunsFilter(tags={"dagster/from_automation_condition": "true"}))
                for run in runs:
                    if run.status == dg.DagsterRunStatus.FAILURE:
                        pytest.fail(f"automation run failed: {_failure(instance, run.run_id)}\n{cluster.logs()}")
                return [r for r in runs if dg.AssetKey("image_index") in (r.asset_selection or set())]

            _wait_for(
                "the automation sensor's rebuild of the whole set",
                lambda: any(r.status == dg.DagsterRunStatus.SUCCESS for r in whole_set_runs()),
                cluster,
                instance,
            )

            # one run per partition, each under its own run key; one whole-set rebuild after both
            runs = batch_runs()
            assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(keys)
            assert sorted(r.tags["dagster/run_key"] for r in runs) == sorted(f"{k}#1" for k in keys)
            assert len(whole_set_runs()) == 1

            # GPU steps ran on the gpu queue's worker, every other step on the default queue's
            for run in [*runs, *whole_set_runs()]:
                placed = _workers_by_step(instance, run.run_id)
                assert placed, f"no step of run {run.run_id} went through Celery"
                for step, worker in placed.items():
                    expected = "gpu" if step in {"image_embeddings", "label_scores"} else "cpu"
                    assert worker == expected, (step, worker)
            gpu_steps = {s for r in runs for s, w in _workers_by_step(instance, r.run_id).items() if w == "gpu"}
            assert gpu_steps == {"image_embeddings", "label_scores"}

        # the results, read as any user would
        store = Store(cluster.hotdog_home)
        assert index.load(store).index.ntotal == IMAGES
        with duckdb.connect(str(store.catalog_path), read_only=True) as con:
            counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("images", "embeddings")}
            labelled = con.execute("SELECT count(*) FROM image_labels").fetchone()[0]
        assert counts == {"images": IMAGES, "embeddings": IMAGES}
        assert labelled > 0

    assert marked_processes(cluster.marker) == []
    assert _nothing_listens(cluster.pg_port) and _nothing_listens(cluster.redis_port)
