"""The baseline of ``bench/scale.py``: the project's definitions with Dagster's default multiprocess executor.

Every step starts a fresh Python (``spawn``) that imports Dagster, dbt and this package again before it
does any work: the executor the project used before ``scale.executor`` existed.
"""

import dagster as dg

import hotdog_dagster.definitions as project


def _with_default_executor(d: dg.Definitions) -> dg.Definitions:
    """The same definitions, only the executor replaced."""
    return dg.Definitions(
        assets=d.assets,
        asset_checks=d.asset_checks,
        jobs=d.jobs,
        schedules=d.schedules,
        sensors=d.sensors,
        resources=d.resources,
        executor=dg.multiprocess_executor,
    )


defs = _with_default_executor(project.defs)
