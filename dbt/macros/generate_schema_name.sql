{#- Schemas are exactly `staging` and `marts` (not dbt's default `main_marts`): BI tools and
    the pipeline read `marts.<table>` directly. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ (custom_schema_name or target.schema) | trim }}
{%- endmacro %}
