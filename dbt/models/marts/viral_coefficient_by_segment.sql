-- The viral coefficient per segment and month from summed counts (not an average of
-- account ratios): k = (invites sent / active users) x (accepted / sent).
with

by_account as (
    select * from {{ ref('viral_coefficient') }}
),

by_segment as (
    select
        segment,
        activity_month,
        count(*) as accounts,
        sum(active_users) as active_users,
        sum(invites_sent) as invites_sent,
        sum(invites_accepted) as invites_accepted
    from by_account
    group by segment, activity_month
)

select
    *,
    invites_sent / active_users as invites_per_active_user,
    invites_accepted / nullif(invites_sent, 0) as acceptance_rate,
    invites_sent / active_users
    * coalesce(invites_accepted / nullif(invites_sent, 0), 0) as viral_coefficient
from by_segment
