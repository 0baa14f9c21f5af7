with

trigger_candidates as (
    select * from {{ source('marts', 'trigger_candidates') }}
),

renamed as (
    select
        trigger_id,
        account_id,
        user_id,
        trigger_type,
        cast(as_of_date as date) as as_of_date,
        route,
        coalesce(suppressed, false) as suppressed,
        suppression_reason,
        coalesce(holdout, false) as holdout,
        coalesce(program, trigger_type) as program,
        expansion_mrr_potential,
        not coalesce(suppressed, false) and not coalesce(holdout, false) as is_actioned
    from trigger_candidates
)

select * from renamed
