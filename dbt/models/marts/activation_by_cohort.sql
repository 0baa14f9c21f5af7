-- Activation rate (activated within the window / signups) and time-to-value (median days
-- from signup to the first activation event, over users who activated) per signup cohort
-- and segment.
with

user_signups as (
    select * from {{ ref('user_signups') }}
)

select
    cohort_month,
    segment,
    count(*) as signups,
    count(activated_at) as activated_users,
    count(*) filter (where activated_within_window) as activated_within_window,
    count(*) filter (where activated_within_window) / count(*) as activation_rate,
    median(days_to_activation) as median_ttv_days
from user_signups
group by cohort_month, segment
