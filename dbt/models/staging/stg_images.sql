-- One row per ingested image. `label` is renamed to `true_label` because downstream `label` means
-- the predicted (zero-shot) label; the columns that only ingest and cleaning use stay in the source.
with images as (
    select * from {{ source('hotdog', 'images') }}
)

select
    id,
    partition,
    source,
    source_name,
    path,
    width,
    height,
    caption,
    label as true_label,
    color,
    seed,
    safety_flagged
from images
