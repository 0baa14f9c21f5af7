with

pql_scores as (
    select * from {{ source('marts', 'pql_scores') }}
),

renamed as (
    select
        account_id,
        cast(as_of_date as date) as as_of_date,
        score,
        tier,
        score_version
    from pql_scores
)

select * from renamed
