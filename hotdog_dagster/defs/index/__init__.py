"""Index: the FAISS index over every partition's image vectors, grown per batch."""

from hotdog_dagster.defs.index.assets import image_index
from hotdog_dagster.defs.index.checks import index_matches_tables

ASSETS = [image_index]
CHECKS = [index_matches_tables]
SENSORS: list = []
