{{ config(severity='warn', meta={'dagster': {'ref': {'name': 'image_labels'}}}) }}
-- Every clean image has a label. A clean image without one means a batch's label_scores partition
-- is missing or older than its embeddings: worth a warning, fixed by materialising label_scores for it.
with image_labels as (
    select id from {{ ref('image_labels') }}
),

clean as (
    select id from {{ source('hotdog', 'clean_images') }}
)

select clean.id
from clean
left join image_labels using (id)
where image_labels.id is null
