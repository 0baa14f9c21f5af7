-- One row per account and month from its first billing month to the last month in the log.
-- Revenue = paid recurring MRR at month end + overage billed in the month, so that
-- starting_mrr + all movements = ending_mrr holds exactly. An account with no revenue at the
-- start of the month is new (never paid before) or reactivated; one that drops to zero has
-- churned; for a continuing account each billing row's MRR change is split by its kind.
with

billing as (
    select * from {{ ref('stg_billing_events') }}
),

accounts as (
    select * from {{ ref('stg_accounts') }}
),

account_span as (
    select
        account_id,
        min(billing_month) as first_month,
        (select max(billing_month) from billing) as last_month
    from billing
    group by account_id
),

spine as (
    select
        account_id,
        cast(unnest(generate_series(first_month, last_month, interval 1 month)) as date) as revenue_month
    from account_span
),

row_movements as (
    select
        account_id,
        billing_month,
        max(account_row) as last_account_row,
        max(paid_mrr) as max_paid_mrr,
        {{ money_sum("overage_usd") }} as overage_usd,
        {{ money_sum("case when mrr_delta > 0 and is_seat_change then mrr_delta else 0 end") }} as seat_delta,
        {{ money_sum("case when mrr_delta > 0 and not is_seat_change then mrr_delta else 0 end") }} as upgrade_delta,
        {{ money_sum("case when mrr_delta < 0 then mrr_delta else 0 end") }} as negative_delta
    from (
        select
            *,
            change = 'seat_add'
            or (change <> 'upgrade' and plan = previous_plan and seats > previous_seats)
                as is_seat_change
        from billing
    )
    group by account_id, billing_month
),

monthly as (
    select
        spine.account_id,
        spine.revenue_month,
        max(row_movements.last_account_row) over account_months as last_account_row,
        coalesce(
            max(row_movements.max_paid_mrr) over earlier_months, 0
        ) > 0 as paid_before_month,
        coalesce(row_movements.overage_usd, 0) as overage_usd,
        coalesce(row_movements.seat_delta, 0) as seat_delta,
        coalesce(row_movements.upgrade_delta, 0) as upgrade_delta,
        coalesce(row_movements.negative_delta, 0) as negative_delta
    from spine
    left join row_movements
        on spine.account_id = row_movements.account_id
        and spine.revenue_month = row_movements.billing_month
    window
        account_months as (partition by spine.account_id order by spine.revenue_month),
        earlier_months as (
            partition by spine.account_id order by spine.revenue_month
            rows between unbounded preceding and 1 preceding
        )
),

revenue as (
    select
        monthly.*,
        billing.paid_mrr as recurring_mrr,
        billing.paid_mrr + monthly.overage_usd as ending_mrr
    from monthly
    inner join billing
        on monthly.account_id = billing.account_id
        and monthly.last_account_row = billing.account_row
),

with_start as (
    select
        *,
        coalesce(lag(ending_mrr) over account_months, 0) as starting_mrr,
        coalesce(lag(overage_usd) over account_months, 0) as previous_overage_usd
    from revenue
    window account_months as (partition by account_id order by revenue_month)
),

classified as (
    select
        with_start.account_id,
        coalesce(accounts.segment, 'unknown') as segment,
        with_start.revenue_month,
        with_start.starting_mrr,
        case
            when starting_mrr = 0 and ending_mrr > 0 and not paid_before_month then ending_mrr
            else 0
        end as new_mrr,
        case when starting_mrr > 0 and ending_mrr > 0 then upgrade_delta else 0 end
            as expansion_upgrade_mrr,
        case when starting_mrr > 0 and ending_mrr > 0 then seat_delta else 0 end
            as expansion_seat_mrr,
        case
            when starting_mrr > 0 and ending_mrr > 0
                then greatest(overage_usd - previous_overage_usd, 0)
            else 0
        end as expansion_overage_mrr,
        case
            when starting_mrr > 0 and ending_mrr > 0
                then negative_delta + least(overage_usd - previous_overage_usd, 0)
            else 0
        end as contraction_mrr,
        case when starting_mrr > 0 and ending_mrr = 0 then -starting_mrr else 0 end as churn_mrr,
        case
            when starting_mrr = 0 and ending_mrr > 0 and paid_before_month then ending_mrr
            else 0
        end as reactivation_mrr,
        with_start.ending_mrr,
        with_start.recurring_mrr,
        with_start.overage_usd
    from with_start
    left join accounts on with_start.account_id = accounts.account_id
)

select
    *,
    expansion_upgrade_mrr + expansion_seat_mrr + expansion_overage_mrr as expansion_mrr,
    ending_mrr - starting_mrr as net_mrr_change
from classified
