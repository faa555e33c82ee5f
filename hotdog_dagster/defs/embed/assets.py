"""``image_embeddings``: OpenCLIP vectors for one batch, into ``embeddings`` and ``embedding_failures``."""

import dagster as dg

from hotdog_dagster.defs.shared import BATCH_BACKFILL, GPU_OP_TAGS, GPU_POOL, batches, counts
from hotdog_dagster.resources import EncoderResource, StoreResource


@dg.multi_asset(
    name="image_embeddings",
    specs=[
        dg.AssetSpec(
            "embeddings",
            deps=["images"],
            description="L2-normalised image vectors plus the text vector of each caption (the description space).",
            kinds={"pytorch", "parquet"},
        ),
        dg.AssetSpec(
            "embedding_failures",
            deps=["images"],
            description="Images whose file could not be embedded, with reason and reason_code.",
            kinds={"parquet"},
        ),
    ],
    partitions_def=batches,
    backfill_policy=BATCH_BACKFILL,
    group_name="embed",
    can_subset=False,
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
)
def image_embeddings(context: dg.AssetExecutionContext, store: StoreResource, encoder: EncoderResource):
    """The model loads once per process, so a backfill's range in one run loads it once; a file that fails
    to decode is recorded, the rest go on."""
    from hotdog_dagster.core.model.embedding import embed_partition  # torch loads in the step, not at import

    enc = encoder.encoder()
    step = max(1, 20 // max(1, encoder.batch_size // 64))

    def progress(done: int, total: int) -> None:
        if done == total or (done // encoder.batch_size) % step == 0:
            context.log.info(f"embedded {done}/{total} images")

    vectors, seconds, failures = 0, 0.0, {}
    for key in context.partition_keys:  # one key, or a backfill's range in one run
        result = embed_partition(
            store.store(),
            key,
            enc,
            batch_size=encoder.batch_size,
            num_workers=encoder.num_workers,
            progress=progress,
        )
        for image_id, (code, message) in list(result.failures.items())[:20]:
            context.log.warning(f"could not embed {image_id} ({code}): {message}")
        vectors += result.table.num_rows
        seconds += result.seconds
        failures.update(result.failures)
    yield dg.MaterializeResult(
        asset_key="embeddings",
        metadata={
            "model": str(enc.spec),
            "device": str(enc.device),
            "vectors": vectors,
            "dimension": enc.dim,
            "images_per_second": round(vectors / seconds, 1) if seconds else 0.0,
            "partitions": len(context.partition_keys),
        },
    )
    yield dg.MaterializeResult(
        asset_key="embedding_failures",
        metadata={
            "failed": len(failures),
            "failed_by_reason": counts([code for code, _ in failures.values()]),
        },
    )
