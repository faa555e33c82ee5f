"""``image_quality`` + ``duplicate_edges`` per batch, ``duplicate_groups`` over the whole set."""

import dagster as dg

from hotdog_dagster.core import clean
from hotdog_dagster.core.io.media import contact_sheet_file
from hotdog_dagster.defs.shared import batches, counts
from hotdog_dagster.resources import CleanResource, StoreResource


@dg.multi_asset(
    name="image_quality",
    specs=[
        dg.AssetSpec(
            "image_quality",
            deps=["images"],
            description="Blank-frame flags per image, with reason and score.",
            kinds={"parquet"},
        ),
        dg.AssetSpec(
            "duplicate_edges",
            deps=["images", "thumbnails", "embeddings"],
            description="Verified near-duplicate pairs with one end in the batch, found against every image stored.",
            kinds={"faiss", "parquet"},
        ),
    ],
    partitions_def=batches,
    group_name="clean",
    can_subset=False,
)
def image_quality(context: dg.AssetExecutionContext, store: StoreResource, clean_settings: CleanResource):
    """A batch costs its own size: its rows are flagged and searched against everything stored so far."""
    s, key, settings = store.store(), context.partition_key, clean_settings.settings()
    images = s.read_table("images", key)
    if images is None:
        raise FileNotFoundError(f"partition {key!r} has no images yet; materialise raw_images for it first")
    flags = clean.blank_table(images, settings)
    s.write_table("image_quality", flags, key)
    edges = clean.batch_edges(s, key, settings)
    s.write_table("duplicate_edges", edges.table, key)
    yield dg.MaterializeResult(
        asset_key="image_quality",
        metadata={
            "images": flags.num_rows,
            "blank": int(sum(flags.column("is_blank").to_pylist())),
            "blank_by_reason": counts(flags.column("blank_code").to_pylist()),
        },
    )
    yield dg.MaterializeResult(asset_key="duplicate_edges", metadata={"edges": edges.table.num_rows, **edges.stats})


@dg.asset(
    deps=["image_quality", "duplicate_edges", "images"],
    group_name="clean",
    kinds={"parquet"},
    automation_condition=dg.AutomationCondition.eager(),
)
def duplicate_groups(context: dg.AssetExecutionContext, store: StoreResource, clean_settings: CleanResource):
    """Cheap over the whole set: connected components over stored edges, so batch order never matters."""
    s = store.store()
    groups = clean.resolve_groups(s, clean_settings.settings())
    s.write_table("duplicate_groups", groups)
    summary = clean.summarize(groups)
    sheets = {}
    for name, paths in clean.sample_paths(s, groups).items():
        if paths:
            sheets[f"{name}_contact_sheet"] = contact_sheet_file(paths, s.media_dir / f"quality_{name}.png")
    context.log.info(
        f"kept {summary['kept']} of {summary['images']}: {summary['blank']} blank, {summary['duplicates']} duplicates"
    )
    return dg.MaterializeResult(
        metadata={
            "images": summary["images"],
            "kept": summary["kept"],
            "blank": summary["blank"],
            "duplicates": summary["duplicates"],
            "duplicate_groups": summary["groups"],
            "blank_by_reason": dg.MetadataValue.json(summary["blank_by_reason"]),
            "duplicates_by_reason": dg.MetadataValue.json(summary["duplicates_by_reason"]),
            "largest_groups": dg.MetadataValue.json(summary["largest_groups"]),
            **{k: dg.MetadataValue.md(md) for k, md in sheets.items()},
        }
    )
