"""Embed: OpenCLIP vectors of one batch's images and captions."""

from hotdog_dagster.defs.embed.assets import image_embeddings
from hotdog_dagster.defs.embed.checks import vectors_are_unit_norm

ASSETS = [image_embeddings]
CHECKS = [vectors_are_unit_norm]
SENSORS: list = []
