-- Every rise of an account's paid MRR (first payment, reactivation, upgrade, seat add): what
-- "upgraded" means for PQL conversion, trigger performance and attribution.
with

billing as (
    select * from {{ ref('stg_billing_events') }}
)

select
    event_id,
    account_id,
    occurred_at,
    cast(occurred_at as date) as occurred_date,
    change,
    mrr_delta
from billing
where mrr_delta > 0
