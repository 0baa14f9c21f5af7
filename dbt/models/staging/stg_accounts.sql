with

accounts as (
    select * from {{ source('marts', 'accounts') }}
),

renamed as (
    select
        account_id,
        coalesce(segment, 'unknown') as segment,
        industry,
        cast(created_at as timestamp) as created_at
    from accounts
)

select * from renamed
