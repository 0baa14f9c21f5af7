with

action_deliveries as (
    select * from {{ source('marts', 'action_deliveries') }}
),

renamed as (
    select
        trigger_id,
        destination,
        status,
        attempts,
        cast(delivered_at as timestamp) as delivered_at,
        status in ({{ sql_string_list(var('delivered_statuses')) }}) as is_delivered
    from action_deliveries
)

select * from renamed
