-- Cumulative NRR and GRR of each monthly acquisition cohort (accounts by their first paid
-- month), with the NRR decomposition of seed 001 in percentage points of the cohort's
-- starting MRR: 100 * nrr = 100 + seat + plan upgrade + usage/overage + contraction
-- + churn drag + reactivation (drags are negative).
{%- set components = [
    'expansion_seat_mrr', 'expansion_upgrade_mrr', 'expansion_overage_mrr',
    'contraction_mrr', 'churn_mrr', 'reactivation_mrr',
] %}

with

movements as (
    select * from {{ ref('mrr_movements') }}
),

cohorts as (
    select account_id, revenue_month as cohort_month, ending_mrr as cohort_starting_mrr
    from movements
    where new_mrr > 0
),

cohort_months as (
    select
        cohorts.cohort_month,
        movements.revenue_month,
        cast(date_diff('month', cohorts.cohort_month, movements.revenue_month) as integer)
            as months_since_acquisition,
        count(*) as cohort_accounts,
        {{ money_sum("cohorts.cohort_starting_mrr") }} as starting_mrr,
        {{ money_sum("movements.ending_mrr") }} as ending_mrr,
        {{ money_sum("least(movements.ending_mrr, cohorts.cohort_starting_mrr)") }} as retained_mrr,
        -- movements after the acquisition month (that month's revenue is the starting point)
        {%- for component in components %}
        {{ money_sum("case when movements.revenue_month > cohorts.cohort_month then movements." ~ component ~ " else 0 end") }}
            as {{ component }}{% if not loop.last %},{% endif %}
        {%- endfor %}
    from cohorts
    inner join movements
        on cohorts.account_id = movements.account_id
        and movements.revenue_month >= cohorts.cohort_month
    group by cohorts.cohort_month, movements.revenue_month
),

cumulative as (
    select
        cohort_month,
        revenue_month,
        months_since_acquisition,
        cohort_accounts,
        starting_mrr,
        ending_mrr,
        retained_mrr,
        {%- for component in components %}
        {{ money_sum(component, over="cohort_to_date") }} as {{ component }}{% if not loop.last %},{% endif %}
        {%- endfor %}
    from cohort_months
    window cohort_to_date as (partition by cohort_month order by revenue_month)
)

select
    cohort_month,
    revenue_month,
    months_since_acquisition,
    cohort_accounts,
    starting_mrr,
    ending_mrr,
    retained_mrr,
    expansion_seat_mrr,
    expansion_upgrade_mrr,
    expansion_overage_mrr,
    contraction_mrr,
    churn_mrr,
    reactivation_mrr,
    ending_mrr / nullif(starting_mrr, 0) as nrr,
    retained_mrr / nullif(starting_mrr, 0) as grr,
    100 * expansion_seat_mrr / nullif(starting_mrr, 0) as seat_expansion_pp,
    100 * expansion_upgrade_mrr / nullif(starting_mrr, 0) as plan_upgrade_pp,
    100 * expansion_overage_mrr / nullif(starting_mrr, 0) as usage_expansion_pp,
    100 * contraction_mrr / nullif(starting_mrr, 0) as contraction_pp,
    100 * churn_mrr / nullif(starting_mrr, 0) as churn_drag_pp,
    100 * reactivation_mrr / nullif(starting_mrr, 0) as reactivation_pp
from cumulative
