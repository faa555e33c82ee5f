"""Catalog: DuckDB views over every table, the derived views, and the dbt models built on them."""

from hotdog_dagster.defs.catalog.assets import catalog
from hotdog_dagster.defs.catalog.dbt import dbt_models

ASSETS = [catalog, dbt_models]
CHECKS: list = []
SENSORS: list = []
