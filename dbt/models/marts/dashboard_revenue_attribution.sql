-- Revenue attribution dashboard (seed 003): per trigger month and program, accounts with an
-- actioned trigger against held-out accounts (holdout triggers only): upgrade rate and
-- expansion MRR within upgrade_window_days of the first trigger, and the difference the
-- triggers made. Suppressed triggers are neither treated nor control.
with

triggers as (
    select * from {{ ref('stg_trigger_candidates') }}
    where not suppressed
),

paid_increases as (
    select * from {{ ref('int_paid_increases') }}
),

account_groups as (
    select
        account_id,
        cast(date_trunc('month', as_of_date) as date) as trigger_month,
        program,
        case when bool_or(is_actioned) then 'triggered' else 'holdout' end as attribution_group,
        min(as_of_date) as first_trigger_date
    from triggers
    group by all
),

account_outcomes as (
    select
        account_groups.trigger_month,
        account_groups.program,
        account_groups.attribution_group,
        account_groups.account_id,
        count(paid_increases.event_id) > 0 as is_upgraded,
        coalesce({{ money_sum("paid_increases.mrr_delta") }}, 0) as expansion_mrr
    from account_groups
    left join paid_increases
        on account_groups.account_id = paid_increases.account_id
        and paid_increases.occurred_date > account_groups.first_trigger_date
        and paid_increases.occurred_date <= account_groups.first_trigger_date + {{ sql_int(var('upgrade_window_days')) }}
    group by all
),

by_program as (
    select
        trigger_month,
        program,
        count(*) filter (where attribution_group = 'triggered') as triggered_accounts,
        count(*) filter (where attribution_group = 'holdout') as holdout_accounts,
        count(*) filter (where attribution_group = 'triggered' and is_upgraded) as triggered_upgraded,
        count(*) filter (where attribution_group = 'holdout' and is_upgraded) as holdout_upgraded,
        coalesce({{ money_sum("case when attribution_group = 'triggered' then expansion_mrr end") }}, 0)
            as triggered_expansion_mrr,
        coalesce({{ money_sum("case when attribution_group = 'holdout' then expansion_mrr end") }}, 0)
            as holdout_expansion_mrr
    from account_outcomes
    group by trigger_month, program
),

rates as (
    select
        *,
        triggered_upgraded / nullif(triggered_accounts, 0) as triggered_upgrade_rate,
        holdout_upgraded / nullif(holdout_accounts, 0) as holdout_upgrade_rate,
        triggered_expansion_mrr / nullif(triggered_accounts, 0) as triggered_expansion_mrr_per_account,
        holdout_expansion_mrr / nullif(holdout_accounts, 0) as holdout_expansion_mrr_per_account
    from by_program
)

select
    *,
    triggered_upgrade_rate - holdout_upgrade_rate as upgrade_rate_lift,
    triggered_accounts
    * (triggered_expansion_mrr_per_account - holdout_expansion_mrr_per_account)
        as incremental_expansion_mrr
from rates
