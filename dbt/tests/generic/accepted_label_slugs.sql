{#
    Every value is a slug of the current label set (read from `label_set`, a relation with a `slug`
    column) or one of `extra_values`. accepted_values cannot do this: the label set is data, chosen
    at run time, not a list fixed in YAML.
#}
{% test accepted_label_slugs(model, column_name, label_set, extra_values=['unlabelled']) %}

with label_values as (
    select {{ column_name }} as value
    from {{ model }}
    where {{ column_name }} is not null
),

slugs as (
    select slug from {{ label_set }}
)

select label_values.value
from label_values
where not exists (select 1 from slugs where slugs.slug = label_values.value)
{%- if extra_values %}
    and label_values.value not in (
        {%- for extra in extra_values %}
        '{{ extra | replace("'", "''") }}'{{ "," if not loop.last }}
        {%- endfor %}
    )
{%- endif %}

{% endtest %}
