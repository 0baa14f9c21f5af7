-- Trigger performance dashboard (seed 003), per trigger month, type and route: fired ->
-- suppressed / held out / actioned -> delivered -> prompt viewed -> clicked, and how many
-- actioned triggers were followed by a paid MRR rise within upgrade_window_days.
with

triggers as (
    select * from {{ ref('stg_trigger_candidates') }}
),

deliveries as (
    select * from {{ ref('stg_action_deliveries') }}
),

events as (
    select * from {{ ref('stg_events') }}
),

paid_increases as (
    select * from {{ ref('int_paid_increases') }}
),

prompt_responses as (
    select
        trigger_id,
        bool_or(event_name = {{ sql_string(var('prompt_viewed_event')) }}) as was_viewed,
        bool_or(event_name = {{ sql_string(var('prompt_clicked_event')) }}) as was_clicked,
        bool_or(event_name = {{ sql_string(var('prompt_dismissed_event')) }}) as was_dismissed
    from events
    where trigger_id is not null
    group by trigger_id
),

delivered as (
    select trigger_id, bool_or(is_delivered) as was_delivered
    from deliveries
    group by trigger_id
),

trigger_outcomes as (
    select
        triggers.*,
        coalesce(delivered.was_delivered, false) as was_delivered,
        coalesce(prompt_responses.was_viewed, false) as was_viewed,
        coalesce(prompt_responses.was_clicked, false) as was_clicked,
        coalesce(prompt_responses.was_dismissed, false) as was_dismissed,
        exists (
            select 1 from paid_increases
            where paid_increases.account_id = triggers.account_id
                and paid_increases.occurred_date > triggers.as_of_date
                and paid_increases.occurred_date <= triggers.as_of_date + {{ sql_int(var('upgrade_window_days')) }}
        ) as was_upgraded
    from triggers
    left join delivered on triggers.trigger_id = delivered.trigger_id
    left join prompt_responses on triggers.trigger_id = prompt_responses.trigger_id
),

by_type as (
    select
        cast(date_trunc('month', as_of_date) as date) as trigger_month,
        trigger_type,
        route,
        count(*) as fired,
        count(*) filter (where suppressed) as suppressed,
        count(*) filter (where holdout and not suppressed) as held_out,
        count(*) filter (where is_actioned) as actioned,
        count(*) filter (where is_actioned and was_delivered) as delivered,
        count(*) filter (where is_actioned and was_viewed) as prompts_viewed,
        count(*) filter (where is_actioned and was_clicked) as prompts_clicked,
        count(*) filter (where is_actioned and was_dismissed) as prompts_dismissed,
        count(*) filter (where is_actioned and was_upgraded) as upgraded
    from trigger_outcomes
    group by all
)

select
    *,
    delivered / nullif(actioned, 0) as delivery_rate,
    prompts_clicked / nullif(prompts_viewed, 0) as click_through_rate,
    upgraded / nullif(actioned, 0) as upgrade_rate
from by_type
