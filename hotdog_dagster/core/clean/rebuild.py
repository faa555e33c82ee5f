"""The full rebuild: every stored image cleaned as one batch, ignoring the stored edges.

It is the reference the incremental path must equal (tests compare flags, groups and
representatives), and what a changed threshold needs: every edge depends on the settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from hotdog_dagster.core.clean import stored
from hotdog_dagster.core.clean.blank import blank_table
from hotdog_dagster.core.clean.edges import EdgeResult, Progress, find_edges
from hotdog_dagster.core.clean.groups import groups_from_edges
from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.settings import CleanSettings


@dataclass(frozen=True)
class Assessment:
    quality: pa.Table  # blank flags of every image (what the image_quality partitions hold together)
    edges: EdgeResult  # every verified near-duplicate pair
    groups: pa.Table  # the duplicate_groups table


def assess(store: Store, settings: CleanSettings, progress: Progress | None = None) -> Assessment:
    """Blank flags, edges and groups of every stored image at once. Writes nothing."""
    images = stored.read_columns(store, "images", ["id", "partition", "lum_mean", "lum_std", "safety_flagged"])
    if images is None:
        images = pa.table({"id": pa.array([], pa.string()), "partition": pa.array([], pa.string())})
    images = stored.unique_ids(images, "images")
    edges = find_edges(store, settings, partition=None, progress=progress)
    return Assessment(
        quality=blank_table(images, settings),
        edges=edges,
        groups=groups_from_edges(store, settings, edges.table),
    )
