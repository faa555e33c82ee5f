-- How many images got each label, and how sure the model was, per partition and over all
-- partitions (partition = 'all'). The 'all' rows list every label of the set plus 'unlabelled',
-- with n_images = 0 where none got it, so a label the model never picks is visible, not missing.
with image_labels as (
    select * from {{ ref('image_labels') }}
),

all_labels as (
    select slug as label from {{ ref('stg_label_set') }}
    union
    select 'unlabelled' as label
),

per_partition as (
    select
        label,
        partition,
        count(*) as n_images,
        avg(probability) as mean_probability,
        min(probability) as min_probability,
        quantile_cont(probability, 0.5) as p50_probability,
        max(probability) as max_probability
    from image_labels
    group by label, partition
),

all_partitions as (
    select
        all_labels.label,
        'all' as partition,
        count(image_labels.id) as n_images,
        avg(image_labels.probability) as mean_probability,
        min(image_labels.probability) as min_probability,
        quantile_cont(image_labels.probability, 0.5) as p50_probability,
        max(image_labels.probability) as max_probability
    from all_labels
    left join image_labels using (label)
    group by all_labels.label
),

summary as (
    select * from per_partition
    union all by name
    select * from all_partitions
)

select
    label,
    partition,
    n_images,
    -- The label's share of its partition's images.
    n_images / nullif(sum(n_images) over (partition by partition), 0) as share,
    mean_probability,
    min_probability,
    p50_probability,
    max_probability
from summary
order by partition, label
