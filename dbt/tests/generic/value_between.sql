{#
    Every non-null value lies in [min_value, max_value]: probabilities and margins outside [0, 1]
    mean the scores were computed or joined wrongly. (dbt_utils has one, but this project must build
    without `dbt deps`.)
#}
{% test value_between(model, column_name, min_value, max_value) %}

select {{ column_name }} as value
from {{ model }}
where {{ column_name }} < {{ min_value }}
   or {{ column_name }} > {{ max_value }}

{% endtest %}
