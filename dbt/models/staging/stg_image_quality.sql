-- One row per image: why it was flagged, and whether cleaning kept it (blank flags per batch,
-- duplicate groups resolved over the whole set).
with flags as (
    select * from {{ source('hotdog', 'image_quality') }}
),

groups as (
    select * from {{ source('hotdog', 'duplicate_groups') }}
)

select
    groups.id,
    flags.is_blank,
    flags.blank_reason,
    groups.duplicate_group,
    groups.duplicate_of,
    groups.similarity,
    groups.dup_reason,
    groups.keep
from groups
left join flags using (id)
