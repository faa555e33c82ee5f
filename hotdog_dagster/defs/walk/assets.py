"""``ordered_walk`` (one row per frame) and ``walk_animation`` (GIF, MP4, contact sheet, 2-D map) per walk."""

import dagster as dg

from hotdog_dagster.core.walk.build import build_walk, render_walk
from hotdog_dagster.core.walk.definition import load_walk
from hotdog_dagster.resources import EncoderResource, StoreResource

#: One partition per named walk; its definition is ``$HOTDOG_HOME/walks/<name>.json``.
walks = dg.DynamicPartitionsDefinition(name="walks")
WALK_JOB = "walk"


@dg.asset(
    partitions_def=walks,
    # The walk reads the index and the catalog's views (not made upstream of the catalog: the catalog
    # shows ordered_walk as a view on its next refresh, without a cycle through the graph).
    deps=["image_index", "search_items", "clean_images"],
    group_name="walk",
    kinds={"faiss", "parquet"},
)
def ordered_walk(context: dg.AssetExecutionContext, store: StoreResource, encoder: EncoderResource):
    """An exact greedy nearest-neighbour tour, improved by 2-opt/Or-opt; never touches the index."""
    s = store.store()
    settings = load_walk(s, context.partition_key)
    enc = encoder.encoder() if settings.start_kind != "id" else None
    result = build_walk(s, settings, encoder=enc)
    if result.message:
        context.log.warning(f"walk {settings.name!r}: {result.message}")
    return dg.MaterializeResult(metadata=result.metadata())


@dg.asset(partitions_def=walks, deps=[ordered_walk], group_name="walk", kinds={"gif", "mp4"})
def walk_animation(context: dg.AssetExecutionContext, store: StoreResource):
    """Where people would rather look than read: the frames in order, a contact sheet, the path on a map."""
    s = store.store()
    settings = load_walk(s, context.partition_key)
    frames = s.read_table("ordered_walk", settings.name, columns=["id"])
    if frames is not None and frames.num_rows == 0:  # the filter kept fewer than two images: said, not failed
        message = f"walk {settings.name!r} is empty: its filter {settings.filter!r} keeps fewer than two images"
        context.log.warning(message)
        return dg.MaterializeResult(metadata={"frames": 0, "message": message})
    rendered = render_walk(s, settings)
    return dg.MaterializeResult(
        metadata={
            "frames": rendered.frames,
            "gif": dg.MetadataValue.path(str(rendered.gif)),
            "mp4": dg.MetadataValue.path(str(rendered.mp4)),
            "contact_sheet": dg.MetadataValue.md(rendered.sheet_markdown),
            "map": dg.MetadataValue.md(rendered.map_markdown),
            "seconds": round(rendered.seconds, 2),
        }
    )
