"""The thin Dagster layer: one module per stage, each calling into ``hotdog_dagster.core``."""
