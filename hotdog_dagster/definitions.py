"""The one place that wires assets, resources, jobs, sensors and the executor together."""

from __future__ import annotations

import dagster as dg

from hotdog_dagster.assets.catalog import catalog
from hotdog_dagster.assets.dbt import dbt_models, dbt_resource
from hotdog_dagster.assets.embeddings import image_embeddings
from hotdog_dagster.assets.index import image_index
from hotdog_dagster.assets.ingest import raw_images
from hotdog_dagster.assets.labels import label_scores
from hotdog_dagster.assets.partitions import batches
from hotdog_dagster.assets.quality import (
    image_quality,
    index_matches_tables,
    quality_covers_every_image,
    vectors_are_unit_norm,
)
from hotdog_dagster.assets.sensors import build_new_files_sensor
from hotdog_dagster.core.profile import Profile, load_profile
from hotdog_dagster.resources import resources_for

PER_BATCH_ASSETS = [raw_images, image_embeddings]
WHOLE_SET_ASSETS = [image_index, image_quality, label_scores, catalog, dbt_models]
ASSET_CHECKS = [vectors_are_unit_norm, index_matches_tables, quality_covers_every_image]
ALL_ASSETS = [*PER_BATCH_ASSETS, *WHOLE_SET_ASSETS]
#: Everything `materialize` needs to run the graph with its checks (checks run only when passed in).
GRAPH = [*ALL_ASSETS, *ASSET_CHECKS]

ingest_job = dg.define_asset_job(
    "ingest_batch",
    selection=dg.AssetSelection.assets(*PER_BATCH_ASSETS),
    partitions_def=batches,
    description="Ingest and embed one batch (one partition).",
)
index_job = dg.define_asset_job(
    "whole_set",
    selection=dg.AssetSelection.assets(*WHOLE_SET_ASSETS),
    description="Over all batches: rebuild the FAISS index, flag blanks and duplicates, score labels, refresh the catalog.",
)


def all_resources(profile: Profile, home: str = "") -> dict[str, object]:
    """The profile's resources plus dbt's (kept out of resources.py: the dbt module imports that one)."""
    return {**resources_for(profile, home=home), "dbt": dbt_resource()}


def build_definitions(profile: Profile | None = None, home: str = "") -> dg.Definitions:
    profile = profile or load_profile()
    return dg.Definitions(
        assets=ALL_ASSETS,
        asset_checks=ASSET_CHECKS,
        jobs=[ingest_job, index_job],
        sensors=[build_new_files_sensor(ingest_job.name)],
        resources=all_resources(profile, home=home),
        executor=dg.multiprocess_executor,
    )


defs = build_definitions()
