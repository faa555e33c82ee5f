"""``dbt_models``: the dbt project in ``dbt/`` (labels and summaries over the asset tables) as Dagster assets.

Where the project is: ``dbt/`` at the repository root, found as ``Path(__file__).parents[2] / "dbt"``
(this file is ``<repo>/hotdog_dagster/assets/dbt.py``). That holds for the editable install the README
uses (``pip install -e .``); a non-editable wheel does not ship ``dbt/``, and would need the project
packaged with ``dagster-dbt project prepare-and-package`` and ``packaged_project_dir`` set here.

The manifest: ``@dbt_assets`` reads ``dbt/target/manifest.json`` when this module is imported, but
the README set-up is only ``pip install -e . && hotdog run`` and ``dagster asset materialize`` does not
set the dev flag ``prepare_if_dev`` relies on. So on import the manifest is prepared (``dbt parse``,
which never opens the database and needs no ``HOTDOG_HOME``) whenever it is missing or older than a
file of the project; under ``dagster dev`` ``prepare_if_dev`` re-parses on every load as usual.
"""

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)

from hotdog_dagster.core.io import catalog
from hotdog_dagster.resources import StoreResource

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt"
#: Files whose change makes a parsed manifest stale (``target/`` and ``logs/`` are dbt's own output).
_PROJECT_INPUTS = ("dbt_project.yml", "profiles.yml", "models", "tests", "macros", "seeds", "snapshots", "analyses")


def _newest_input_mtime(project_dir: Path) -> float:
    """The latest modification time of anything dbt parses, so an edited model re-parses on next import."""
    newest = 0.0
    for name in _PROJECT_INPUTS:
        path = project_dir / name
        if path.is_file():
            newest = max(newest, path.stat().st_mtime)
        elif path.is_dir():
            for child in path.rglob("*"):
                if child.is_file():
                    newest = max(newest, child.stat().st_mtime)
    return newest


def prepare_manifest(project: DbtProject) -> Path:
    """Make sure ``project.manifest_path`` exists and is current; returns it.

    ``prepare_if_dev`` covers ``dagster dev``; everything else (``dagster asset materialize``,
    ``hotdog run``, tests, a fresh checkout) gets ``dbt parse`` here when the manifest is missing or
    older than the project. The preparer takes a file lock, so parallel step processes importing
    this module at once parse only once.
    """
    project.prepare_if_dev()
    manifest = project.manifest_path
    if not manifest.exists() or manifest.stat().st_mtime < _newest_input_mtime(project.project_dir):
        manifest.parent.mkdir(parents=True, exist_ok=True)
        project.preparer.prepare(project)
    if not manifest.exists():
        raise FileNotFoundError(
            f"dbt parse did not write {manifest}; run `dbt parse` in {project.project_dir} to see why"
        )
    return manifest


dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR)
prepare_manifest(dbt_project)


class HotdogDbtTranslator(DagsterDbtTranslator):
    """Every dbt model in the ``labels`` group, re-built eagerly when its inputs change (as ``catalog`` is).

    Sources map to the assets that write them through ``meta.dagster.asset_key`` in
    ``models/sources.yml`` (dagster-dbt reads that itself). ``label_set`` and ``label_scores`` are
    both written by the ``label_scores`` asset, hence duplicate source keys are allowed.
    """

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return "labels"

    def get_automation_condition(self, dbt_resource_props: Mapping[str, Any]) -> dg.AutomationCondition | None:
        return dg.AutomationCondition.eager()


class DbtLabelConfig(dg.Config):
    """Thresholds of ``image_labels``; unset means the defaults in ``dbt/dbt_project.yml`` (0.5 and 0.0)."""

    label_min_probability: float | None = None
    label_min_margin: float | None = None

    def dbt_vars(self) -> dict[str, float]:
        return {name: value for name, value in self.model_dump().items() if value is not None}


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=HotdogDbtTranslator(DagsterDbtTranslatorSettings(enable_duplicate_source_asset_keys=True)),
    # dbt writes catalog.duckdb, which allows a single writer: share the pool with the catalog asset.
    pool="duckdb",
)
def dbt_models(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, store: StoreResource, config: DbtLabelConfig
) -> Iterator[Any]:
    """Refresh the catalog's views first, so dbt reads the tables as they are now, then ``dbt build``."""
    data = store.store()
    # profiles.yml reads the database path from HOTDOG_HOME; the dbt subprocess inherits this.
    os.environ["HOTDOG_HOME"] = str(data.root)
    counts = catalog.refresh(data)
    context.log.info(f"catalog views refreshed: {counts}")
    args = ["build"]
    if dbt_vars := config.dbt_vars():
        args += ["--vars", json.dumps(dbt_vars)]
    yield from dbt.cli(args, context=context).stream()


def dbt_resource() -> DbtCliResource:
    """The ``dbt`` resource of the definitions, bound to the same project the assets were built from."""
    return DbtCliResource(project_dir=dbt_project)
