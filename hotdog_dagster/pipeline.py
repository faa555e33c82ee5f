"""Run the asset graph in process on the Dagster instance the UI uses: what ``hotdog run`` does.

Each batch is its own partitioned run (raw_images → image_embeddings), then the whole-set assets
run once. Runs land in ``$DAGSTER_HOME`` (default ``$HOTDOG_HOME/dagster``), so ``dagster dev``
pointed at the same home shows them, and a failed batch does not stop the others.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from hotdog_dagster.assets.partitions import batches
from hotdog_dagster.core.io import catalog
from hotdog_dagster.core.io.batches import BatchSpec, save_batch
from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.labels.scoring import LabelSet
from hotdog_dagster.core.model.encoder import ModelSpec
from hotdog_dagster.core.profile import Profile
from hotdog_dagster.definitions import GRAPH, PER_BATCH_ASSETS, WHOLE_SET_ASSETS, all_resources

#: Dagster's console logger at INFO: the assets' progress lines, without the per-event DEBUG chatter.
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}

DAGSTER_YAML = """\
# Written by hotdog: every pool (gpu, duckdb) admits one step at a time.
concurrency:
  pools:
    default_limit: 1
telemetry:
  enabled: false
"""


def dagster_instance(store: Store) -> dg.DagsterInstance:
    """The persistent instance in ``$DAGSTER_HOME``, created under the data root when unset."""
    home = Path(os.environ.get("DAGSTER_HOME") or store.root / "dagster")
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def register_batches(store: Store, instance: dg.DagsterInstance, specs: list[BatchSpec]) -> None:
    """Write each batch's manifest, then add its partition: the UI can then (re)materialise it by key."""
    for spec in specs:
        save_batch(store, spec)
    existing = set(instance.get_dynamic_partitions(batches.name))
    new = [s.key for s in specs if s.key not in existing]
    if new:
        instance.add_dynamic_partitions(batches.name, new)


@dataclass
class RunSummary:
    home: str
    dagster_home: str
    partitions: list[str]
    failed: dict[str, str] = field(default_factory=dict)
    tables: dict[str, int] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            err = event.step_failure_data.error
            while err.cause is not None and err.cls_name == "DagsterExecutionStepExecutionError":
                err = err.cause  # the user's exception, not Dagster's wrapper
            return f"{event.step_key}: {err.cls_name}: {err.message.strip()}"
    return "run failed (see the run in the Dagster UI)"


def run_pipeline(
    store: Store, profile: Profile, specs: list[BatchSpec], say: Callable[[str], None] = print
) -> RunSummary:
    """Materialise every batch in ``specs``, then the whole-set assets; report per-table counts."""
    ModelSpec.parse(profile.model).checkpoint()  # a bad model spec or label set fails here, before any work
    LabelSet.build(profile.labels, profile.label_templates)
    instance = dagster_instance(store)
    register_batches(store, instance, specs)
    resources = all_resources(profile, home=str(store.root))
    summary = RunSummary(
        home=str(store.root), dagster_home=os.environ["DAGSTER_HOME"], partitions=[s.key for s in specs]
    )
    for n, spec in enumerate(specs, start=1):
        say(f"[{n}/{len(specs)}] {spec.key}: ingest and embed {spec.size_hint} {spec.source} item(s)")
        result = dg.materialize(
            GRAPH,
            selection=PER_BATCH_ASSETS,
            partition_key=spec.key,
            instance=instance,
            resources=resources,
            raise_on_error=False,
            tags={"hotdog/cli": "run"},
            run_config=RUN_CONFIG,
        )
        if not result.success:
            summary.failed[spec.key] = _failure_message(result)
            say(f"    FAILED: {summary.failed[spec.key]}")
            continue
        meta = _metadata(result)
        say(
            f"    {meta.get('images', '?')} images, {meta.get('rejected', 0)} rejected, "
            f"{meta.get('vectors', '?')} vectors at {meta.get('images_per_second', '?')} images/s"
        )
    say("whole set: index, cleaning, labels, catalog and dbt models")
    result = dg.materialize(
        GRAPH,
        selection=WHOLE_SET_ASSETS,
        instance=instance,
        resources=resources,
        raise_on_error=False,
        tags={"hotdog/cli": "run"},
        run_config=RUN_CONFIG,
    )
    if not result.success:
        summary.failed["whole_set"] = _failure_message(result)
        say(f"    FAILED: {summary.failed['whole_set']}")
    if store.catalog_path.exists():
        with catalog.connect(store) as con:
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


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    out: dict[str, object] = {}
    for mat in result.get_asset_materialization_events():
        for key, value in mat.materialization.metadata.items():
            out[key] = getattr(value, "value", value)
    return out
