-- One row per clean scored image: its most probable label, kept only when the model is sure enough.
-- An image is 'unlabelled' when its top probability is under var('label_min_probability') or its
-- lead over the runner-up is under var('label_min_margin'), so low-confidence guesses are never
-- counted as labels downstream.
with scores as (
    select * from {{ ref('stg_label_scores') }}
),

label_set as (
    select * from {{ ref('stg_label_set') }}
),

images as (
    select * from {{ ref('stg_images') }}
),

-- Flagged images are scored too (a batch is scored before the whole set is cleaned): leave them out.
clean as (
    select id from {{ source('hotdog', 'clean_images') }}
),

-- Labels of each image from most to least probable; ties go to the label listed first.
ranked as (
    select
        scores.id,
        scores.slug,
        label_set.label as label_text,
        scores.cosine,
        scores.probability,
        row_number() over (
            partition by scores.id
            order by scores.probability desc, label_set.position, scores.slug
        ) as rank
    from scores
    inner join label_set using (slug)
    inner join clean using (id)
),

top_two as (
    select
        id,
        max(case when rank = 1 then slug end) as top_label,
        max(case when rank = 1 then label_text end) as label_text,
        max(case when rank = 1 then cosine end) as cosine,
        max(case when rank = 1 then probability end) as probability,
        max(case when rank = 2 then slug end) as runner_up,
        max(case when rank = 2 then probability end) as runner_up_probability
    from ranked
    where rank <= 2
    group by id
),

-- With a single label there is no runner-up: its margin is its whole probability.
with_margin as (
    select
        *,
        probability - coalesce(runner_up_probability, 0) as margin
    from top_two
)

select
    with_margin.id,
    images.partition,
    images.source,
    images.true_label,
    case
        when with_margin.probability < {{ var('label_min_probability') }} then 'unlabelled'
        when with_margin.margin < {{ var('label_min_margin') }} then 'unlabelled'
        else with_margin.top_label
    end as label,
    with_margin.top_label,
    with_margin.label_text,
    with_margin.cosine,
    with_margin.probability,
    with_margin.runner_up,
    with_margin.runner_up_probability,
    with_margin.margin
-- A left join, so a scored id missing from images still shows up (and fails the relationships test).
from with_margin
left join images using (id)
