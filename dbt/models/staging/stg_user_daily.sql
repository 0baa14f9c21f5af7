with

user_daily as (
    select * from {{ source('marts', 'user_daily') }}
),

renamed as (
    select
        canonical_user_id,
        account_id,
        cast(date as date) as activity_date,
        events
    from user_daily
    where events > 0
)

select * from renamed
