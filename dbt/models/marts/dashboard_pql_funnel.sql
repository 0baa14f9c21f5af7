-- PQL funnel dashboard (seed 003), per month and segment: accounts scored -> entered the PQL
-- set (medium/high) -> of those, reached high -> got an actioned trigger -> raised paid MRR
-- within upgrade_window_days of entering.
with

scores as (
    select * from {{ ref('stg_pql_scores') }}
),

transitions as (
    select * from {{ ref('stg_tier_transitions') }}
),

triggers as (
    select * from {{ ref('stg_trigger_candidates') }}
),

paid_increases as (
    select * from {{ ref('int_paid_increases') }}
),

accounts as (
    select * from {{ ref('stg_accounts') }}
),

scored as (
    select distinct account_id, cast(date_trunc('month', as_of_date) as date) as funnel_month
    from scores
),

entries as (
    select
        account_id,
        cast(date_trunc('month', as_of_date) as date) as funnel_month,
        min(as_of_date) as entered_on
    from transitions
    where is_pql_entry
    group by all
),

account_stages as (
    select
        scored.account_id,
        scored.funnel_month,
        entries.entered_on is not null as is_pql,
        exists (
            select 1 from transitions
            where transitions.account_id = scored.account_id
                and transitions.to_tier = 'high'
                and cast(date_trunc('month', transitions.as_of_date) as date) = scored.funnel_month
        ) as is_high,
        exists (
            select 1 from triggers
            where triggers.account_id = scored.account_id
                and triggers.is_actioned
                and triggers.as_of_date >= entries.entered_on
                and triggers.as_of_date <= entries.entered_on + {{ sql_int(var('upgrade_window_days')) }}
        ) as is_triggered,
        exists (
            select 1 from paid_increases
            where paid_increases.account_id = scored.account_id
                and paid_increases.occurred_date > entries.entered_on
                and paid_increases.occurred_date <= entries.entered_on + {{ sql_int(var('upgrade_window_days')) }}
        ) as is_upgraded
    from scored
    left join entries
        on scored.account_id = entries.account_id
        and scored.funnel_month = entries.funnel_month
),

stage_counts as (
    select
        account_stages.funnel_month,
        coalesce(accounts.segment, 'unknown') as segment,
        count(*) as scored,
        count(*) filter (where is_pql) as pql,
        count(*) filter (where is_pql and is_high) as high_tier,
        count(*) filter (where is_pql and is_triggered) as triggered,
        count(*) filter (where is_pql and is_upgraded) as upgraded
    from account_stages
    left join accounts on account_stages.account_id = accounts.account_id
    group by all
),

stages as (
    unpivot stage_counts
    on scored, pql, high_tier, triggered, upgraded
    into name stage value accounts
)

select
    funnel_month,
    segment,
    stage,
    case stage
        when 'scored' then 1 when 'pql' then 2 when 'high_tier' then 3
        when 'triggered' then 4 else 5
    end as stage_order,
    accounts,
    accounts / nullif(max(case when stage = 'pql' then accounts end) over month_segment, 0)
        as share_of_pqls
from stages
window month_segment as (partition by funnel_month, segment)
