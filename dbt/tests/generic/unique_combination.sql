{#
    No two rows share the same values in `columns`: the grain of a long table (e.g. one row per
    image and label). Written here because the project must build without `dbt deps`.
#}
{% test unique_combination(model, columns) %}

select {{ columns | join(', ') }}, count(*) as n_rows
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1

{% endtest %}
