-- PQL-to-paid: accounts entering the medium or high tier, and how many raised their paid MRR
-- within upgrade_window_days after entry (seed 001: 60 days), per entry month, segment, tier.
with

transitions as (
    select * from {{ ref('stg_tier_transitions') }}
),

accounts as (
    select * from {{ ref('stg_accounts') }}
),

paid_increases as (
    select * from {{ ref('int_paid_increases') }}
),

entries as (
    select account_id, as_of_date, to_tier as tier
    from transitions
    where is_pql_entry
),

outcomes as (
    select
        entries.account_id,
        entries.as_of_date,
        entries.tier,
        min(paid_increases.occurred_date) as first_upgrade_date,
        coalesce({{ money_sum("paid_increases.mrr_delta") }}, 0) as upgrade_mrr
    from entries
    left join paid_increases
        on entries.account_id = paid_increases.account_id
        and paid_increases.occurred_date > entries.as_of_date
        and paid_increases.occurred_date
            <= entries.as_of_date + {{ sql_int(var('upgrade_window_days')) }}
    group by entries.account_id, entries.as_of_date, entries.tier
)

select
    cast(date_trunc('month', outcomes.as_of_date) as date) as entry_month,
    coalesce(accounts.segment, 'unknown') as segment,
    outcomes.tier,
    count(*) as pql_entries,
    count(outcomes.first_upgrade_date) as converted_entries,
    count(outcomes.first_upgrade_date) / count(*) as conversion_rate,
    {{ money_sum("outcomes.upgrade_mrr") }} as upgrade_mrr,
    median(outcomes.first_upgrade_date - outcomes.as_of_date) as median_days_to_upgrade
from outcomes
left join accounts on outcomes.account_id = accounts.account_id
group by all
