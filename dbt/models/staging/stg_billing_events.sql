-- The billing change log in business order (occurred_at, then event_id), so rows that
-- arrived late or out of order still take their place; each row carries the MRR before it.
-- Paid MRR is 0 while trialing or canceled: only a paying account can expand (CONTRACT §3).
with

billing_events as (
    select * from {{ source('marts', 'billing_events') }}
),

typed as (
    select
        event_id,
        account_id,
        cast(occurred_at as timestamp) as occurred_at,
        plan,
        seats,
        status,
        change,
        coalesce(overage_usd, 0) as overage_usd,
        case when status in ('trialing', 'canceled') then 0 else mrr end as paid_mrr
    from billing_events
),

ordered as (
    select
        *,
        cast(date_trunc('month', occurred_at) as date) as billing_month,
        row_number() over account_order as account_row,
        coalesce(lag(paid_mrr) over account_order, 0) as previous_paid_mrr,
        lag(plan) over account_order as previous_plan,
        lag(seats) over account_order as previous_seats
    from typed
    window account_order as (partition by account_id order by occurred_at, event_id)
)

select
    *,
    paid_mrr - previous_paid_mrr as mrr_delta
from ordered
