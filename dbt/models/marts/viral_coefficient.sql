-- Within-account viral coefficient per account and month (seed 001):
-- k = invites sent per active user x invite acceptance rate (accepted / sent).
with

events as (
    select * from {{ ref('stg_events') }}
),

user_daily as (
    select * from {{ ref('stg_user_daily') }}
),

accounts as (
    select * from {{ ref('stg_accounts') }}
),

active_users as (
    select
        account_id,
        cast(date_trunc('month', activity_date) as date) as activity_month,
        count(distinct canonical_user_id) as active_users
    from user_daily
    where account_id is not null
    group by all
),

invites as (
    select
        account_id,
        cast(date_trunc('month', event_date) as date) as activity_month,
        count(*) filter (where event_name = {{ sql_string(var('invite_sent_event')) }})
            as invites_sent,
        count(*) filter (where event_name = {{ sql_string(var('invite_accepted_event')) }})
            as invites_accepted
    from events
    where account_id is not null
    group by all
)

select
    active_users.account_id,
    coalesce(accounts.segment, 'unknown') as segment,
    active_users.activity_month,
    active_users.active_users,
    coalesce(invites.invites_sent, 0) as invites_sent,
    coalesce(invites.invites_accepted, 0) as invites_accepted,
    coalesce(invites.invites_sent, 0) / active_users.active_users as invites_per_active_user,
    invites.invites_accepted / nullif(invites.invites_sent, 0) as acceptance_rate,
    coalesce(invites.invites_sent, 0) / active_users.active_users
    * coalesce(invites.invites_accepted / nullif(invites.invites_sent, 0), 0) as viral_coefficient
from active_users
left join invites
    on active_users.account_id = invites.account_id
    and active_users.activity_month = invites.activity_month
left join accounts on active_users.account_id = accounts.account_id
