"""``image_quality`` + ``duplicate_edges`` per batch, ``duplicate_groups`` over the whole set."""

import dagster as dg
import pyarrow as pa

from hotdog_dagster.core import clean
from hotdog_dagster.core.io.media import contact_sheet_file
from hotdog_dagster.defs.shared import BATCH_BACKFILL, batches, counts
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
    backfill_policy=BATCH_BACKFILL,
    group_name="clean",
    can_subset=False,
)
def image_quality(context: dg.AssetExecutionContext, store: StoreResource, clean_settings: CleanResource):
    """A batch costs its own size: its rows are flagged and searched against everything stored so far."""
    s, settings = store.store(), clean_settings.settings()
    images_n, blank, codes, edge_rows, stats = 0, 0, [], 0, {}
    all_flags, all_edges = [], []
    for key in context.partition_keys:  # one key, or a backfill's range in one run, in order
        images = s.read_table("images", key)
        if images is None:
            raise FileNotFoundError(f"partition {key!r} has no images yet; materialise raw_images for it first")
        flags = clean.blank_table(images, settings)
        s.write_table("image_quality", flags, key)
        edges = clean.batch_edges(s, key, settings)
        s.write_table("duplicate_edges", edges.table, key)
        all_flags.append(flags.select(["id", "is_blank"]))
        all_edges.append(edges.table)
        images_n, blank = images_n + flags.num_rows, blank + int(sum(flags.column("is_blank").to_pylist()))
        codes += flags.column("blank_code").to_pylist()
        edge_rows += edges.table.num_rows
        for name, value in edges.stats.items():  # numbers add up over partitions; anything else: the last one
            summable = isinstance(value, int | float) and isinstance(stats.get(name, 0), int | float)
            stats[name] = stats.get(name, 0) + value if summable else value
    sheets = {}
    samples = clean.batch_sample_paths(s, pa.concat_tables(all_flags), pa.concat_tables(all_edges))
    last = context.partition_keys[-1]
    for name, paths in samples.items():
        if paths:
            out = s.media_dir / f"quality_{last}_{name}.png"
            sheets[f"{name}_contact_sheet"] = dg.MetadataValue.md(contact_sheet_file(paths, out))
    yield dg.MaterializeResult(
        asset_key="image_quality",
        metadata={"images": images_n, "blank": blank, "blank_by_reason": counts(codes), **sheets},
    )
    yield dg.MaterializeResult(asset_key="duplicate_edges", metadata={"edges": edge_rows, **stats})


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
