"""``raw_images``: one batch into the ``images`` and ``rejected`` tables (one Parquet file each per partition).

One step serves every source (sketch, folder, diffusion), so each table keeps one writer. A diffusion
batch is generated inside the step from the settings its manifest recorded when it was planned; its
data version is the fingerprint of those settings, so planning it again with another parameter shows
everything downstream stale, and re-materialising it unchanged does not.
"""

import hashlib

import dagster as dg

from hotdog_dagster.core.io.batches import BatchSpec, load_batch, params_fingerprint
from hotdog_dagster.core.io.ingest import ingest_batch
from hotdog_dagster.core.settings import Profile
from hotdog_dagster.defs.shared import BATCH_BACKFILL, GPU_OP_TAGS, GPU_POOL, batches, counts
from hotdog_dagster.resources import IngestResource, StoreResource

#: The multi-asset's arguments; the GPU-placed twin (:func:`place_generation`) adds the pool and tags.
RAW_IMAGES = dict(
    name="raw_images",
    specs=[
        dg.AssetSpec("images", description="One row per image of the batch, decoded and described.", kinds={"parquet"}),
        dg.AssetSpec(
            "rejected", description="Files that could not be read, with reason and reason_code.", kinds={"parquet"}
        ),
        dg.AssetSpec(
            "thumbnails",
            description="A 32x32 thumbnail and a small pixel descriptor per image: near-duplicate candidates.",
            kinds={"parquet"},
        ),
    ],
    partitions_def=batches,
    backfill_policy=BATCH_BACKFILL,
    group_name="ingest",
    can_subset=False,
)


def batch_data_version(specs: list[BatchSpec]) -> dg.DataVersion | None:
    """The data version of what one run materialised: a diffusion batch's parameter fingerprint.

    Sketch and folder batches keep Dagster's default (a new version per run): a folder's files can
    change under the same manifest. Dagster gives every partition of one run the same version, so a
    backfill range of diffusion batches gets one fingerprint over all of them (stable when the range
    is re-run unchanged); a range that mixes sources gets the default.
    """
    if not specs or any(s.source != "diffusion" for s in specs):
        return None
    if len(specs) == 1:
        return dg.DataVersion(params_fingerprint(specs[0]))
    text = "\n".join(f"{s.key}={params_fingerprint(s)}" for s in sorted(specs, key=lambda s: s.key))
    return dg.DataVersion(hashlib.blake2b(text.encode(), digest_size=12).hexdigest())


def _raw_images(context: dg.AssetExecutionContext, store: StoreResource, ingest: IngestResource):
    """Files in = images + rejected, always: an unreadable file is a row with its reason, never a crash."""
    files_in, images, thumbs, sources, reasons, flagged, specs = 0, 0, 0, set(), [], 0, []
    for key in context.partition_keys:  # one key, or a backfill's range in one run
        spec = load_batch(store.store(), key)
        if spec.source == "diffusion" and spec.generate.get("fused_embedding"):
            context.log.warning(
                f"{key}: generate.fused_embedding is a library path (generate_and_embed); "
                "in the asset graph image_embeddings embeds the written files"
            )
        result = ingest_batch(
            store.store(),
            spec,
            max_pixels=ingest.max_pixels,
            max_file_bytes=ingest.max_file_bytes,
            workers=ingest.workers,
            progress=lambda done, total, spec=spec: context.log.info(f"ingested {done}/{total} files of {spec.key}"),
        )
        for row in result.rejected.slice(0, 20).to_pylist():
            context.log.warning(f"rejected {row['source_name']}: {row['reason']}")
        files_in, images = files_in + result.files_in, images + result.images.num_rows
        thumbs += result.thumbnails.num_rows
        sources.add(spec.source)
        reasons += result.rejected.column("reason_code").to_pylist()
        flagged += sum(bool(v) for v in result.images.column("safety_flagged").to_pylist())
        specs.append(spec)
    version = batch_data_version(specs)
    yield dg.MaterializeResult(
        asset_key="images",
        metadata={
            "source": ", ".join(sorted(sources)),
            "files_in": files_in,
            "images": images,
            "partitions": len(context.partition_keys),
            **({"safety_flagged": flagged} if "diffusion" in sources else {}),
        },
        data_version=version,
    )
    yield dg.MaterializeResult(asset_key="thumbnails", metadata={"thumbnails": thumbs}, data_version=version)
    yield dg.MaterializeResult(
        asset_key="rejected",
        metadata={"rejected": len(reasons), "rejected_by_reason": counts(reasons)},
        data_version=version,
    )


raw_images = dg.multi_asset(**RAW_IMAGES)(_raw_images)
#: The same step in the ``gpu`` pool with the executors' GPU placement tags.
raw_images_on_gpu = dg.multi_asset(**RAW_IMAGES, pool=GPU_POOL, op_tags=GPU_OP_TAGS)(_raw_images)


def place_generation(assets: list[dg.AssetsDefinition], profile: Profile) -> list[dg.AssetsDefinition]:
    """Swap in the GPU-placed ``raw_images`` when the profile generates on CUDA (``generate.device: cuda``).

    Placement belongs to a step, not to a batch, so the profile decides: then one step per card
    generates (the ``gpu`` pool), on a Celery ``gpu`` worker or a GPU node, and sketch and folder
    batches take the same route. Any other device keeps the step beside the CPU steps.
    """
    if not profile.generate.device.startswith("cuda"):
        return assets
    return [raw_images_on_gpu if dg.AssetKey("images") in a.keys else a for a in assets]
