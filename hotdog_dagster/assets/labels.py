"""``label_scores``: every clean image against the zero-shot label set, in one matrix product."""

import dagster as dg

from hotdog_dagster.assets.quality import image_quality
from hotdog_dagster.core.labels.scoring import score_store
from hotdog_dagster.resources import EncoderResource, LabelsResource, StoreResource


@dg.asset(
    deps=[image_quality],
    group_name="labels",
    kinds={"numpy", "parquet"},
    automation_condition=dg.AutomationCondition.eager(),
)
def label_scores(
    context: dg.AssetExecutionContext, store: StoreResource, encoder: EncoderResource, labels: LabelsResource
) -> dg.MaterializeResult:
    """Raw cosine per label (columns named by slug) and softmax probabilities at the model's logit scale."""
    label_set = labels.label_set()  # a bad label set fails here, before the model loads
    enc = encoder.encoder()
    scored = score_store(store.store(), enc.encode_texts, enc.logit_scale, label_set)
    top = scored.table.column("top_label").value_counts().to_pylist()
    context.log.info(
        f"scored {scored.table.num_rows} images against {len(label_set.labels)} labels in {scored.seconds:.3f}s"
    )
    return dg.MaterializeResult(
        metadata={
            "images": scored.table.num_rows,
            "labels": dg.MetadataValue.json(dict(zip(label_set.slugs, label_set.labels, strict=True))),
            "top_label_counts": dg.MetadataValue.json({d["values"]: d["counts"] for d in top}),
            "score_seconds": round(scored.seconds, 4),
            "logit_scale": round(enc.logit_scale, 3),
        }
    )
