-- Day-N retention per signup cohort and segment: the share of signed-up users active on
-- exactly day N after their signup day, over the users whose day N is already in the data.
with

user_signups as (
    select * from {{ ref('user_signups') }}
),

activity as (
    select distinct canonical_user_id, activity_date from {{ ref('stg_user_daily') }}
),

retention_days as (
    select unnest([{% for day in var('retention_days') %}{{ sql_int(day) }}{% if not loop.last %}, {% endif %}{% endfor %}]) as retention_day
),

eligible as (
    select
        user_signups.canonical_user_id,
        user_signups.cohort_month,
        user_signups.segment,
        retention_days.retention_day,
        user_signups.signup_date + retention_days.retention_day as target_date
    from user_signups
    cross join retention_days
    where user_signups.signup_date + retention_days.retention_day
        <= (select max(activity_date) from activity)
)

select
    eligible.cohort_month,
    eligible.segment,
    eligible.retention_day,
    count(*) as eligible_users,
    count(activity.canonical_user_id) as retained_users,
    count(activity.canonical_user_id) / count(*) as retention_rate
from eligible
left join activity
    on eligible.canonical_user_id = activity.canonical_user_id
    and eligible.target_date = activity.activity_date
group by eligible.cohort_month, eligible.segment, eligible.retention_day
