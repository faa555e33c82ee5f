"""``image_quality``: blank frames and duplicates flagged with reasons, plus the checks that guard the index."""

import dagster as dg

from hotdog_dagster.assets.embeddings import image_embeddings
from hotdog_dagster.assets.index import image_index
from hotdog_dagster.assets.ingest import raw_images
from hotdog_dagster.core.clean import checks, quality
from hotdog_dagster.core.io.media import contact_sheet_file
from hotdog_dagster.core.search import index
from hotdog_dagster.resources import QualityResource, StoreResource


@dg.asset(
    deps=[raw_images, image_index],
    group_name="clean",
    kinds={"faiss", "parquet"},
    automation_condition=dg.AutomationCondition.eager(),
)
def image_quality(
    context: dg.AssetExecutionContext, store: StoreResource, quality_settings: QualityResource
) -> dg.MaterializeResult:
    """Flags, never deletes: the `clean_images` view (keep = true) is what every later stage reads."""
    s = store.store()
    images = s.read_table("images")
    embeddings = s.read_table("embeddings", columns=["id", "vector"])
    if images is None or embeddings is None:
        raise FileNotFoundError("no images or embeddings yet; materialise raw_images and image_embeddings first")
    loaded = index.load(s)
    table = quality.assess(
        images, quality.vectors_for(images, embeddings), index=loaded, config=quality_settings.config()
    )
    s.write_table("image_quality", table)
    summary = quality.summarize(table)
    samples = quality.sample_paths(images, table)
    sheets = {}
    for name, paths in samples.items():
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
            "near_vetoed_by_phash": summary["near_vetoed_by_phash"],
            **{k: dg.MetadataValue.md(md) for k, md in sheets.items()},
        }
    )


@dg.asset_check(asset=image_embeddings, description="every vector is unit-norm and finite")
def vectors_are_unit_norm(store: StoreResource) -> dg.AssetCheckResult:
    table = store.store().read_table("embeddings", columns=["id", "vector"])
    result = checks.unit_norm(table)
    return dg.AssetCheckResult(passed=result.passed, metadata=result.metadata)


@dg.asset_check(
    asset=image_index,
    blocking=True,
    description="images, embeddings and the index hold the same ids (blocks cleaning when not)",
)
def index_matches_tables(store: StoreResource) -> dg.AssetCheckResult:
    s = store.store()
    result = checks.same_ids(
        s.read_table("images", columns=["id"]), s.read_table("embeddings", columns=["id"]), index.load(s).ids
    )
    return dg.AssetCheckResult(passed=result.passed, metadata=result.metadata)


@dg.asset_check(asset=image_quality, description="the quality table has exactly one row per image")
def quality_covers_every_image(store: StoreResource) -> dg.AssetCheckResult:
    s = store.store()
    images = s.read_table("images", columns=["id"])
    q = s.read_table("image_quality", columns=["id"])
    result = checks.covers(images, q)
    return dg.AssetCheckResult(passed=result.passed, metadata=result.metadata)
