-- One row per image: why it was flagged, and whether cleaning kept it.
with quality as (
    select * from {{ source('hotdog', 'image_quality') }}
)

select
    id,
    is_blank,
    blank_reason,
    duplicate_group,
    duplicate_of,
    similarity,
    dup_reason,
    keep
from quality
