with

tier_transitions as (
    select * from {{ source('marts', 'tier_transitions') }}
),

renamed as (
    select
        account_id,
        cast(as_of_date as date) as as_of_date,
        from_tier,
        to_tier,
        -- entering the PQL set (medium or high) from outside it
        to_tier in ('medium', 'high')
        and coalesce(from_tier, 'low') not in ('medium', 'high') as is_pql_entry
    from tier_transitions
)

select * from renamed
