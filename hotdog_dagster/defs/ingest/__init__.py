"""Ingest: one batch of images (sketch, folder or diffusion) into ``images`` and ``rejected``."""

from hotdog_dagster.defs.ingest.assets import raw_images
from hotdog_dagster.defs.ingest.sensors import new_files_sensor

ASSETS = [raw_images]
CHECKS: list = []
SENSORS = [new_files_sensor]
