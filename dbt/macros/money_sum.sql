{#- Sum money exactly: a DOUBLE sum depends on the order DuckDB's threads add rows in, so an
    unchanged re-run could differ in the last bits. Summed as DECIMAL, returned as DOUBLE. -#}
{% macro money_sum(expr, over=none) -%}
cast(sum(cast({{ expr }} as decimal(38, 9))){% if over %} over {{ over }}{% endif %} as double)
{%- endmacro %}
