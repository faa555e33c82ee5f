"""The one place that merges the stage folders with resources, jobs and the executor.

``hotdog run``, the UI and ``dagster asset materialize`` / ``dg launch`` all execute the jobs defined
here: ``ingest_batch`` (every per-batch asset, one partition per run) and ``whole_set`` (the index,
duplicate groups, the catalog's views and the dbt models, once after any number of batches).
"""

from __future__ import annotations

import dagster as dg

from hotdog_dagster.core.labels.scoring import LabelSet, fingerprint
from hotdog_dagster.core.settings import Profile, load_profile
from hotdog_dagster.defs import automation, catalog, clean, embed, index, ingest, label, search, walk
from hotdog_dagster.defs.catalog.dbt import dbt_resource
from hotdog_dagster.defs.ingest.assets import place_generation
from hotdog_dagster.defs.ingest.sensors import BATCH_JOB
from hotdog_dagster.defs.shared import batches
from hotdog_dagster.defs.walk.assets import WALK_JOB, walks
from hotdog_dagster.resources import resources_for

STAGES = (ingest, embed, index, clean, label, catalog, search, walk, automation)
ASSETS = [a for stage in STAGES for a in stage.ASSETS]
CHECKS = [c for stage in STAGES for c in stage.CHECKS]
SENSORS = [s for stage in STAGES for s in stage.SENSORS]

#: Everything partitioned by batch: what one batch costs.
PER_BATCH = dg.AssetSelection.assets(*(key for a in ASSETS if a.partitions_def == batches for key in a.keys))
#: Everything over the whole set, cheap per run: the index grows, groups resolve from edges, views, dbt.
#: Everything partitioned by walk: one named walk per run.
PER_WALK = dg.AssetSelection.assets(*(key for a in ASSETS if a.partitions_def == walks for key in a.keys))
WHOLE_SET = dg.AssetSelection.all() - PER_BATCH - PER_WALK

ingest_job = dg.define_asset_job(
    BATCH_JOB,
    selection=PER_BATCH,
    partitions_def=batches,
    description="One batch: ingest, embed, blank flags and duplicate edges, label scores.",
)
whole_set_job = dg.define_asset_job(
    "whole_set",
    selection=WHOLE_SET,
    description="Over all batches: grow the FAISS index, resolve duplicate groups, refresh the catalog, dbt build.",
)
walk_job = dg.define_asset_job(
    WALK_JOB,
    selection=PER_WALK,
    partitions_def=walks,
    description="One named walk: the ordered frames, then the GIF, MP4, contact sheet and map.",
)
catalog_job = dg.define_asset_job(
    "refresh_catalog",
    selection=dg.AssetSelection.assets("clean_images", "search_items"),
    description="Refresh the catalog's views alone (cheap): after a walk, so ordered_walk is queryable in SQL.",
)
JOBS = [ingest_job, whole_set_job, walk_job, catalog_job]


def with_versions(assets: list[dg.AssetsDefinition], profile: Profile) -> list[dg.AssetsDefinition]:
    """Code versions from the settings that shape a per-batch table, so partitions made with other
    settings show stale in the UI (then backfill them): ``label_scores`` and ``label_set`` carry the
    label set's fingerprint, ``image_quality`` and ``duplicate_edges`` the clean settings'."""
    label_version = fingerprint(LabelSet.build(profile.labels.labels, profile.labels.templates))
    versions = {
        "label_scores": label_version,
        "label_set": label_version,
        "image_quality": profile.clean.fingerprint(),
        "duplicate_edges": profile.clean.fingerprint(),
    }

    def versioned(spec: dg.AssetSpec) -> dg.AssetSpec:
        version = versions.get(spec.key.path[0])
        return spec.replace_attributes(code_version=version) if version else spec

    return [a.map_asset_specs(versioned) if {k.path[0] for k in a.keys} & set(versions) else a for a in assets]


def build_definitions(profile: Profile | None = None, home: str = "") -> dg.Definitions:
    profile = profile or load_profile()
    return dg.Definitions(
        assets=automation.follow_batches(with_versions(place_generation(ASSETS, profile), profile)),
        asset_checks=CHECKS,
        jobs=JOBS,
        sensors=SENSORS,
        schedules=automation.schedules_for(profile, ASSETS),
        resources={**resources_for(profile, home=home), "dbt": dbt_resource()},
        executor=automation.executor_for(profile.scale),
    )


defs = build_definitions()
