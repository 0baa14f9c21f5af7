-- Freemium-to-paid conversion per account creation cohort and segment: accounts whose paid
-- MRR ever rose above zero, and the median days from account creation to the first payment.
with

accounts as (
    select * from {{ ref('stg_accounts') }}
),

paid_increases as (
    select * from {{ ref('int_paid_increases') }}
),

first_paid as (
    select account_id, min(occurred_at) as first_paid_at
    from paid_increases
    group by account_id
),

account_conversion as (
    select
        cast(date_trunc('month', accounts.created_at) as date) as cohort_month,
        accounts.segment,
        first_paid.first_paid_at,
        epoch(first_paid.first_paid_at - accounts.created_at) / 86400.0 as days_to_paid
    from accounts
    left join first_paid on accounts.account_id = first_paid.account_id
    where accounts.created_at is not null
)

select
    cohort_month,
    segment,
    count(*) as accounts,
    count(first_paid_at) as paid_accounts,
    count(first_paid_at) / count(*) as conversion_rate,
    median(days_to_paid) as median_days_to_paid
from account_conversion
group by cohort_month, segment
