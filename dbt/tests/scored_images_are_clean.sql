{{ config(severity='warn', meta={'dagster': {'ref': {'name': 'image_labels'}}}) }}
-- label_scores scores clean images only. A scored image that cleaning did not keep means the scores
-- are older than the latest image_quality run: worth a warning, and fixed by re-running label_scores.
with image_labels as (
    select id from {{ ref('image_labels') }}
),

quality as (
    select id, keep from {{ ref('stg_image_quality') }}
)

select image_labels.id, quality.keep
from image_labels
left join quality using (id)
where quality.keep is distinct from true
