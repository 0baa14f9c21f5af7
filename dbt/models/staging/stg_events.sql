-- Events keyed by canonical user and account: the account is the explicit link when the
-- event has one, else the user's most recent membership at the event's time (CONTRACT §2).
with

events as (
    select * from {{ source('marts', 'events') }}
),

identity_map as (
    select * from {{ source('marts', 'identity_map') }}
),

memberships as (
    select * from {{ source('marts', 'account_memberships') }}
),

canonical as (
    select
        events.event_id,
        events.event_name,
        coalesce(
            by_user.canonical_user_id, by_anonymous.canonical_user_id, events.user_id
        ) as canonical_user_id,
        events.account_id as explicit_account_id,
        cast(events.event_time as timestamp) as event_time,
        cast(events.event_date as date) as event_date,
        events.trigger_id
    from events
    left join identity_map as by_user
        on by_user.id_type = 'user' and by_user.id = events.user_id
    left join identity_map as by_anonymous
        on by_anonymous.id_type = 'anonymous' and by_anonymous.id = events.anonymous_id
    where events.type = 'track'
),

resolved as (
    select
        canonical.event_id,
        canonical.event_name,
        canonical.canonical_user_id,
        coalesce(canonical.explicit_account_id, memberships.account_id) as account_id,
        canonical.event_time,
        canonical.event_date,
        canonical.trigger_id
    from canonical
    asof left join memberships
        on canonical.canonical_user_id = memberships.canonical_user_id
        and canonical.event_time >= cast(memberships.valid_from as timestamp)
)

select * from resolved
where canonical_user_id is not null
