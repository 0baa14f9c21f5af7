-- Cohort expansion velocity dashboard (seed 003): heatmap of acquisition cohort x months since
-- acquisition with that month's expanding share and expansion per account, cumulative NRR/GRR.
with

velocity as (
    select * from {{ ref('expansion_velocity') }}
),

nrr as (
    select * from {{ ref('nrr_by_cohort') }}
)

select
    nrr.cohort_month,
    nrr.revenue_month,
    nrr.months_since_acquisition,
    nrr.cohort_accounts,
    coalesce(velocity.expanding_accounts, 0) as expanding_accounts,
    coalesce(velocity.expanding_share, 0) as expanding_share,
    coalesce(velocity.expansion_mrr_per_account, 0) as expansion_mrr_per_account,
    {{ money_sum("coalesce(velocity.expansion_mrr, 0)", over="cohort_to_date") }} / nrr.cohort_accounts
        as cumulative_expansion_mrr_per_account,
    nrr.nrr,
    nrr.grr
from nrr
left join velocity
    on nrr.cohort_month = velocity.cohort_month
    and nrr.revenue_month = velocity.revenue_month
window cohort_to_date as (partition by nrr.cohort_month order by nrr.revenue_month)
