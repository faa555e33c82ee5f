"""Walk: named nearest-neighbour walks through the clean images, one dynamic partition per walk."""

from hotdog_dagster.defs.walk.assets import ordered_walk, walk_animation

ASSETS = [ordered_walk, walk_animation]
CHECKS: list = []
SENSORS: list = []
