"""``image_embeddings``: OpenCLIP vectors for one batch's images and captions."""

import dagster as dg

from hotdog_dagster.assets.ingest import raw_images
from hotdog_dagster.assets.partitions import GPU_OP_TAGS, batches
from hotdog_dagster.resources import EncoderResource, StoreResource


@dg.asset(
    partitions_def=batches,
    deps=[raw_images],
    group_name="embed",
    kinds={"pytorch", "parquet"},
    pool="gpu",
    op_tags=GPU_OP_TAGS,
)
def image_embeddings(
    context: dg.AssetExecutionContext, store: StoreResource, encoder: EncoderResource
) -> dg.MaterializeResult:
    """L2-normalised image vectors plus the text vector of each caption (the description space)."""
    from hotdog_dagster.core.model.embedding import embed_partition  # torch loads in the step, not at import

    enc = encoder.encoder()
    step = max(1, 20 // max(1, encoder.batch_size // 64))

    def progress(done: int, total: int) -> None:
        if done == total or (done // encoder.batch_size) % step == 0:
            context.log.info(f"embedded {done}/{total} images")

    result = embed_partition(
        store.store(),
        context.partition_key,
        enc,
        batch_size=encoder.batch_size,
        num_workers=encoder.num_workers,
        progress=progress,
    )
    for image_id, reason in list(result.failures.items())[:20]:
        context.log.warning(f"could not embed {image_id}: {reason}")
    return dg.MaterializeResult(
        metadata={
            "model": str(enc.spec),
            "device": str(enc.device),
            "vectors": result.table.num_rows,
            "dimension": enc.dim,
            "failed": len(result.failures),
            "images_per_second": round(result.images_per_second, 1),
        }
    )
