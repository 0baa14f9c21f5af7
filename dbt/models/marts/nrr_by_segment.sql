-- Monthly NRR and GRR per segment over the accounts paying at the start of the month, with
-- the seed 001 decomposition in percentage points of starting MRR:
-- 100 * nrr = 100 + seat + plan upgrade + usage/overage + contraction + churn drag.
-- GRR caps each account at its starting MRR, so expansion never hides a loss.
with

movements as (
    select * from {{ ref('mrr_movements') }}
    where starting_mrr > 0
),

by_segment as (
    select
        segment,
        revenue_month,
        count(*) as starting_accounts,
        {{ money_sum("starting_mrr") }} as starting_mrr,
        {{ money_sum("ending_mrr") }} as ending_mrr,
        {{ money_sum("least(ending_mrr, starting_mrr)") }} as retained_mrr,
        {{ money_sum("expansion_seat_mrr") }} as expansion_seat_mrr,
        {{ money_sum("expansion_upgrade_mrr") }} as expansion_upgrade_mrr,
        {{ money_sum("expansion_overage_mrr") }} as expansion_overage_mrr,
        {{ money_sum("contraction_mrr") }} as contraction_mrr,
        {{ money_sum("churn_mrr") }} as churn_mrr,
        count(*) filter (where churn_mrr < 0) as churned_accounts
    from movements
    group by segment, revenue_month
)

select
    *,
    ending_mrr / starting_mrr as nrr,
    retained_mrr / starting_mrr as grr,
    100 * expansion_seat_mrr / starting_mrr as seat_expansion_pp,
    100 * expansion_upgrade_mrr / starting_mrr as plan_upgrade_pp,
    100 * expansion_overage_mrr / starting_mrr as usage_expansion_pp,
    100 * contraction_mrr / starting_mrr as contraction_pp,
    100 * churn_mrr / starting_mrr as churn_drag_pp
from by_segment
