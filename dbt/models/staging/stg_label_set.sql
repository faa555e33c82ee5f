-- The label set the scores were made with: slug (the score column's name), label text, position.
-- Each partition records its own set; the one most partitions used is the set shown here, and the
-- Dagster check `scores_use_current_label_set` names any partition scored with another.
with label_set as (
    select * from {{ source('hotdog', 'label_set') }}
),

prevailing as (
    select fingerprint
    from label_set
    group by fingerprint
    order by count(distinct partition) desc, fingerprint
    limit 1
)

select distinct
    label_set.slug,
    label_set.label,
    label_set.position
from label_set
inner join prevailing using (fingerprint)
