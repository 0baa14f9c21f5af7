-- DAU, WAU (trailing 7 days) and MAU (trailing 28 days) of distinct users, overall
-- (segment 'all') and per segment of the account the activity happened in.
with

user_daily as (
    select * from {{ ref('stg_user_daily') }}
),

accounts as (
    select * from {{ ref('stg_accounts') }}
),

activity as (
    select distinct
        user_daily.canonical_user_id,
        user_daily.activity_date,
        coalesce(accounts.segment, 'unknown') as segment
    from user_daily
    left join accounts on user_daily.account_id = accounts.account_id
),

calendar as (
    select cast(unnest(generate_series(min(activity_date), max(activity_date), interval 1 day)) as date) as activity_date
    from activity
),

windowed as (
    select
        calendar.activity_date,
        activity.segment,
        activity.canonical_user_id,
        activity.activity_date = calendar.activity_date as is_same_day,
        activity.activity_date > calendar.activity_date - 7 as is_same_week
    from calendar
    inner join activity
        on activity.activity_date <= calendar.activity_date
        and activity.activity_date > calendar.activity_date - 28
),

counted as (
    select
        activity_date,
        coalesce(segment, 'all') as segment,
        count(distinct canonical_user_id) filter (where is_same_day) as dau,
        count(distinct canonical_user_id) filter (where is_same_week) as wau,
        count(distinct canonical_user_id) as mau
    from windowed
    group by grouping sets ((activity_date, segment), (activity_date))
)

select
    *,
    dau / nullif(wau, 0) as dau_wau_ratio,
    dau / nullif(mau, 0) as dau_mau_ratio
from counted
