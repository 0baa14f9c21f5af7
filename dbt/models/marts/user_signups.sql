-- One row per signed-up user: signup cohort, segment, and when (if ever) the user first did
-- the activation event at or after signup. Event names come from the event catalog via var().
with

events as (
    select * from {{ ref('stg_events') }}
),

accounts as (
    select * from {{ ref('stg_accounts') }}
),

signups as (
    select
        canonical_user_id,
        min(event_time) as signed_up_at,
        arg_min(account_id, event_time) as account_id
    from events
    where event_name = {{ sql_string(var('signup_event')) }}
    group by canonical_user_id
),

activations as (
    select
        signups.canonical_user_id,
        min(events.event_time) as activated_at
    from signups
    inner join events
        on signups.canonical_user_id = events.canonical_user_id
        and events.event_time >= signups.signed_up_at
    where events.event_name = {{ sql_string(var('activation_event')) }}
    group by signups.canonical_user_id
)

select
    signups.canonical_user_id,
    signups.account_id,
    coalesce(accounts.segment, 'unknown') as segment,
    signups.signed_up_at,
    cast(signups.signed_up_at as date) as signup_date,
    cast(date_trunc('month', signups.signed_up_at) as date) as cohort_month,
    activations.activated_at,
    epoch(activations.activated_at - signups.signed_up_at) / 86400.0 as days_to_activation,
    coalesce(
        activations.activated_at
        <= signups.signed_up_at + to_days({{ sql_int(var('activation_window_days')) }}),
        false
    ) as activated_within_window
from signups
left join activations on signups.canonical_user_id = activations.canonical_user_id
left join accounts on signups.account_id = accounts.account_id
