"""``label_scores``: one batch's images against the label set in one matrix product, plus the set used."""

import dagster as dg

from hotdog_dagster.core.labels.scoring import score_partition
from hotdog_dagster.defs.shared import BATCH_BACKFILL, GPU_OP_TAGS, GPU_POOL, batches
from hotdog_dagster.resources import EncoderResource, LabelsResource, StoreResource


@dg.multi_asset(
    name="label_scores",
    specs=[
        dg.AssetSpec(
            "label_scores",
            deps=["embeddings"],
            description="A cosine column per label slug, p_<slug> softmax probabilities, top_label, top_probability.",
            kinds={"numpy", "parquet"},
        ),
        dg.AssetSpec(
            "label_set",
            deps=["embeddings"],
            description="The label set (and its fingerprint) each partition was scored with.",
            kinds={"parquet"},
        ),
    ],
    partitions_def=batches,
    backfill_policy=BATCH_BACKFILL,
    group_name="labels",
    can_subset=False,
    pool=GPU_POOL,  # the text tower runs where the model is: on the GPU in a GPU profile
    op_tags=GPU_OP_TAGS,
)
def label_scores(
    context: dg.AssetExecutionContext, store: StoreResource, encoder: EncoderResource, labels: LabelsResource
):
    """Changing the label set changes this asset's code version, so every partition shows stale: backfill it."""
    label_set = labels.label_set()  # a bad label set fails here, before the model loads
    enc = encoder.encoder()
    s = store.store()
    images, seconds, top_counts, fingerprint = 0, 0.0, {}, ""
    for key in context.partition_keys:  # one key, or a backfill's range in one run
        scored = score_partition(s, key, enc.encode_texts, enc.logit_scale, label_set, str(enc.spec))
        s.write_table("label_scores", scored.table, key)
        s.write_table("label_set", scored.label_set, key)
        for d in scored.table.column("top_label").value_counts().to_pylist():
            top_counts[d["values"]] = top_counts.get(d["values"], 0) + d["counts"]
        images, seconds = images + scored.table.num_rows, seconds + scored.seconds
        fingerprint = scored.label_set.column("fingerprint")[0].as_py()
    context.log.info(f"scored {images} images against {len(label_set.labels)} labels")
    yield dg.MaterializeResult(
        asset_key="label_scores",
        metadata={
            "images": images,
            "top_label_counts": dg.MetadataValue.json(top_counts),
            "score_seconds": round(seconds, 4),
            "logit_scale": round(enc.logit_scale, 3),
            "partitions": len(context.partition_keys),
        },
    )
    yield dg.MaterializeResult(
        asset_key="label_set",
        metadata={
            "labels": dg.MetadataValue.json(dict(zip(label_set.slugs, label_set.labels, strict=True))),
            "fingerprint": fingerprint,
        },
    )
