"""``raw_images``: one batch of images (sketch or folder) into the images and rejected tables."""

from collections import Counter

import dagster as dg

from hotdog_dagster.assets.partitions import batches
from hotdog_dagster.core.io.batches import load_batch
from hotdog_dagster.core.io.ingest import ingest_batch
from hotdog_dagster.resources import IngestResource, StoreResource


@dg.asset(partitions_def=batches, group_name="ingest", kinds={"python", "parquet"})
def raw_images(context: dg.AssetExecutionContext, store: StoreResource, ingest: IngestResource) -> dg.MaterializeResult:
    """Images of one batch, decoded and described; unreadable files are kept in `rejected` with a reason."""
    spec = load_batch(store.store(), context.partition_key)
    result = ingest_batch(
        store.store(),
        spec,
        max_pixels=ingest.max_pixels,
        workers=ingest.workers,
        progress=lambda done, total: context.log.info(f"ingested {done}/{total} files of {spec.key}"),
    )
    reasons = Counter(r.split(" (")[0].split(":")[0] for r in result.rejected.column("reason").to_pylist())
    for row in result.rejected.slice(0, 20).to_pylist():
        context.log.warning(f"rejected {row['source_name']}: {row['reason']}")
    return dg.MaterializeResult(
        metadata={
            "source": spec.source,
            "files_in": result.files_in,
            "images": result.images.num_rows,
            "rejected": result.rejected.num_rows,
            "rejected_by_reason": dg.MetadataValue.json(dict(reasons)),
        }
    )
