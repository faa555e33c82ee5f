"""The Dagster layer: one folder per stage (its assets, checks and sensors together), thin over ``core``.

Each stage package exposes ``ASSETS``, ``CHECKS`` and ``SENSORS``; ``hotdog_dagster/definitions.py``
merges them with the resources and jobs.
"""
