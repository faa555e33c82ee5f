"""``dbt_models``: the dbt project in ``dbt/`` (labels and summaries over the tables) as Dagster assets."""

import json
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from hotdog_dagster.core.io.catalog import catalog_lock
from hotdog_dagster.core.io.faults import fault_point
from hotdog_dagster.core.io.locks import file_lock
from hotdog_dagster.dbt_project import dbt_executable, dbt_project
from hotdog_dagster.resources import StoreResource

if not dbt_project.manifest_path.exists():
    raise FileNotFoundError(
        f"the dbt manifest {dbt_project.manifest_path} is missing: run `hotdog prepare` once "
        "(it runs `dbt parse`; `hotdog run` and `dagster dev` do it themselves)"
    )


class HotdogDbtTranslator(DagsterDbtTranslator):
    """Every model in the ``dbt`` group, after the catalog's views (so any downstream selection builds them)."""

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        if unique_id.startswith("model."):
            # Models read the catalog's views; the catalog step creates them (and refreshes them first).
            have = {dep.asset_key for dep in spec.deps}
            extra = [dg.AssetDep(k) for k in ("search_items", "clean_images") if dg.AssetKey(k) not in have]
            spec = spec.merge_attributes(deps=extra)
        return spec.replace_attributes(group_name="dbt", automation_condition=dg.AutomationCondition.eager())


class DbtLabelConfig(dg.Config):
    """Thresholds of ``image_labels``; unset means the defaults in ``dbt/dbt_project.yml`` (0.5 and 0.0)."""

    label_min_probability: float | None = None
    label_min_margin: float | None = None

    def dbt_vars(self) -> dict[str, float]:
        return {name: value for name, value in self.model_dump().items() if value is not None}


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=HotdogDbtTranslator(),
    pool="duckdb",  # dbt writes catalog.duckdb, which allows a single writer: shared with the catalog step
)
def dbt_models(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, store: StoreResource, config: DbtLabelConfig
) -> Iterator[Any]:
    """``dbt build`` against this run's data root (passed as a var: no environment is changed).

    dbt writes ``catalog.duckdb``, which takes one writing process at a time and refuses readers
    meanwhile, so the build holds the catalog lock exclusively: a refresh or a search in another
    run waits for it instead of failing on DuckDB's lock (the ``duckdb`` pool only orders steps
    that Dagster schedules, not two runs, ``hotdog search`` or a second ``hotdog run``).
    """
    s = store.store()
    dbt_vars = {"hotdog_home": str(s.root), **config.dbt_vars()}
    args = ["--no-use-colors", "build", "--vars", json.dumps(dbt_vars)]
    with file_lock(catalog_lock(s), what=f"the catalog {s.catalog_path}"):
        fault_point("dbt", "build")
        for event in dbt.cli(args, context=context).stream():
            fault_point("dbt", f"event {type(event).__name__}")
            yield event


def dbt_resource() -> DbtCliResource:
    """The ``dbt`` resource, bound to the same project and to the dbt beside this Python."""
    return DbtCliResource(project_dir=dbt_project, dbt_executable=dbt_executable())
