-- Activation funnel dashboard (seed 003): signed up -> activated within the window ->
-- account reached PQL (medium/high) after signup -> account paid after signup, per signup
-- cohort and segment, one row per stage for a Sankey or funnel chart.
with

user_signups as (
    select * from {{ ref('user_signups') }}
),

transitions as (
    select * from {{ ref('stg_tier_transitions') }}
),

paid_increases as (
    select * from {{ ref('int_paid_increases') }}
),

user_stages as (
    select
        user_signups.cohort_month,
        user_signups.segment,
        user_signups.activated_within_window as is_activated,
        exists (
            select 1 from transitions
            where transitions.account_id = user_signups.account_id
                and transitions.is_pql_entry
                and transitions.as_of_date >= user_signups.signup_date
        ) as is_pql,
        exists (
            select 1 from paid_increases
            where paid_increases.account_id = user_signups.account_id
                and paid_increases.occurred_at >= user_signups.signed_up_at
        ) as is_paid
    from user_signups
),

stage_counts as (
    select
        cohort_month,
        segment,
        count(*) as signed_up,
        count(*) filter (where is_activated) as activated,
        count(*) filter (where is_activated and is_pql) as pql,
        count(*) filter (where is_activated and is_pql and is_paid) as paid
    from user_stages
    group by cohort_month, segment
),

stages as (
    unpivot stage_counts
    on signed_up, activated, pql, paid
    into name stage value users
)

select
    cohort_month,
    segment,
    stage,
    case stage when 'signed_up' then 1 when 'activated' then 2 when 'pql' then 3 else 4 end
        as stage_order,
    users,
    users / first_value(users) over cohort_funnel as share_of_signups,
    users / nullif(lag(users) over cohort_funnel, 0) as conversion_from_previous
from stages
window cohort_funnel as (
    partition by cohort_month, segment
    order by case stage when 'signed_up' then 1 when 'activated' then 2 when 'pql' then 3 else 4 end
)
