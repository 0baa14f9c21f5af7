{#- Business parameters arrive through var(); quote them as SQL literals, escaping quotes,
    rather than pasting raw text into SQL. -#}
{% macro sql_string(value) -%}
    '{{ value | string | replace("'", "''") }}'
{%- endmacro %}

{% macro sql_string_list(values) -%}
    {%- for value in values %}{{ sql_string(value) }}{% if not loop.last %}, {% endif %}{% endfor -%}
{%- endmacro %}

{% macro sql_int(value) -%}
    {{ value | int }}
{%- endmacro %}
