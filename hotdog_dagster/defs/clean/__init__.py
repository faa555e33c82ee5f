"""Clean: blank flags and duplicate edges per batch, duplicate groups over the whole set."""

from hotdog_dagster.defs.clean.assets import duplicate_groups, image_quality
from hotdog_dagster.defs.clean.checks import groups_cover_every_image, quality_covers_every_image

ASSETS = [image_quality, duplicate_groups]
CHECKS = [quality_covers_every_image, groups_cover_every_image]
SENSORS: list = []
