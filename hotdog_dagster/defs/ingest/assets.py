"""``raw_images``: one batch into the ``images`` and ``rejected`` tables (one Parquet file each per partition)."""

import dagster as dg

from hotdog_dagster.core.io.batches import load_batch
from hotdog_dagster.core.io.ingest import ingest_batch
from hotdog_dagster.defs.shared import BATCH_BACKFILL, batches, counts
from hotdog_dagster.resources import IngestResource, StoreResource


@dg.multi_asset(
    name="raw_images",
    specs=[
        dg.AssetSpec("images", description="One row per image of the batch, decoded and described.", kinds={"parquet"}),
        dg.AssetSpec(
            "rejected", description="Files that could not be read, with reason and reason_code.", kinds={"parquet"}
        ),
    ],
    partitions_def=batches,
    backfill_policy=BATCH_BACKFILL,
    group_name="ingest",
    can_subset=False,
)
def raw_images(context: dg.AssetExecutionContext, store: StoreResource, ingest: IngestResource):
    """Files in = images + rejected, always: an unreadable file is a row with its reason, never a crash."""
    files_in, images, sources, reasons = 0, 0, set(), []
    for key in context.partition_keys:  # one key, or a backfill's range in one run
        spec = load_batch(store.store(), key)
        result = ingest_batch(
            store.store(),
            spec,
            max_pixels=ingest.max_pixels,
            workers=ingest.workers,
            progress=lambda done, total, spec=spec: context.log.info(f"ingested {done}/{total} files of {spec.key}"),
        )
        for row in result.rejected.slice(0, 20).to_pylist():
            context.log.warning(f"rejected {row['source_name']}: {row['reason']}")
        files_in, images = files_in + result.files_in, images + result.images.num_rows
        sources.add(spec.source)
        reasons += result.rejected.column("reason_code").to_pylist()
    yield dg.MaterializeResult(
        asset_key="images",
        metadata={
            "source": ", ".join(sorted(sources)),
            "files_in": files_in,
            "images": images,
            "partitions": len(context.partition_keys),
        },
    )
    yield dg.MaterializeResult(
        asset_key="rejected",
        metadata={"rejected": len(reasons), "rejected_by_reason": counts(reasons)},
    )
