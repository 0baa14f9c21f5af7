{#- Rows where `expression` is false are failures (e.g. an accounting identity). -#}
{% test expression_is_true(model, expression) %}
select *
from {{ model }}
where not coalesce(({{ expression }}), false)
{% endtest %}
