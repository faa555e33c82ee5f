-- The current label set: slug (the score column's name), label text, and its position in the set.
with label_set as (
    select * from {{ source('hotdog', 'label_set') }}
)

select
    slug,
    label,
    position
from label_set
