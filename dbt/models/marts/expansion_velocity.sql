-- Expansion velocity per acquisition cohort and month: expansion MRR (and net MRR change)
-- per cohort account, and the share of the cohort that expanded that month.
with

movements as (
    select * from {{ ref('mrr_movements') }}
),

cohorts as (
    select account_id, revenue_month as cohort_month
    from movements
    where new_mrr > 0
),

by_cohort as (
    select
        cohorts.cohort_month,
        movements.revenue_month,
        cast(date_diff('month', cohorts.cohort_month, movements.revenue_month) as integer)
            as months_since_acquisition,
        count(*) as cohort_accounts,
        count(*) filter (where movements.expansion_mrr > 0) as expanding_accounts,
        {{ money_sum("movements.expansion_mrr") }} as expansion_mrr,
        {{ money_sum("movements.net_mrr_change") }} as net_mrr_change
    from cohorts
    inner join movements
        on cohorts.account_id = movements.account_id
        and movements.revenue_month > cohorts.cohort_month
    group by cohorts.cohort_month, movements.revenue_month
)

select
    *,
    expansion_mrr / cohort_accounts as expansion_mrr_per_account,
    net_mrr_change / cohort_accounts as net_mrr_change_per_account,
    expanding_accounts / cohort_accounts as expanding_share
from by_cohort
