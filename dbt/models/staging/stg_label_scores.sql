-- label_scores is wide (one cosine and one p_<slug> column per label) and its columns change with
-- the label set, so it is unpivoted by name and matched against label_set instead of listed here:
-- a new label set needs no change to this model. The result is long: one row per (image, label).
with scores as (
    select * from {{ source('hotdog', 'label_scores') }}
),

label_set as (
    select slug from {{ ref('stg_label_set') }}
),

-- Every score column as (column_name, score). try_cast keeps UNPIVOT's value type FLOAT even if a
-- non-numeric column is ever added to the table (it becomes NULL, which UNPIVOT drops).
score_cells as (
    unpivot (
        select
            id,
            try_cast(columns(* exclude (id, partition, top_label, top_probability)) as float)
        from scores
    )
    on columns(* exclude (id))
    into name column_name value score
)

select
    cells.id,
    label_set.slug,
    max(case when cells.column_name = label_set.slug then cells.score end) as cosine,
    max(case when cells.column_name = 'p_' || label_set.slug then cells.score end) as probability
from score_cells as cells
inner join label_set
    on cells.column_name in (label_set.slug, 'p_' || label_set.slug)
group by cells.id, label_set.slug
