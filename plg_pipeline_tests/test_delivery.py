"""Delivery: outbox payloads, signatures, the ledger, dry run, and the Dagster asset end to end."""

import json
from datetime import UTC, date, datetime

import dagster as dg
import polars as pl
import pytest

from plg_pipeline.defs.actions.assets import action_deliveries
from plg_pipeline.defs.actions.resources import DestinationsResource, EndpointConfig
from plg_pipeline.defs.resources import PipelineSettings
from plg_pipeline.lib import delivery, lake, ledger, warehouse
from plg_pipeline.lib.configfile import ConfigError
from plg_pipeline.receiver import Receiver

SECRETS = {"inapp": "s-inapp", "crm": "s-crm", "slack": "s-slack"}
ROUTES = ("in_product", "sdr", "ae_cs")


def candidates(n: int = 9) -> pl.DataFrame:
    """n eligible triggers cycling through the three routes, plus one suppressed and one holdout."""
    rows = [
        {
            "trigger_id": f"t{i:03d}",
            "account_id": f"acc_{i % 4}",
            "user_id": f"usr_{i}",
            "trigger_type": "seat_limit",
            "as_of_date": date(2026, 11, 20),
            "route": ROUTES[i % 3],
            "suppressed": i == n,
            "suppression_reason": "cooldown" if i == n else None,
            "holdout": i == n + 1,
            "program": "team_plan",
            "surface": "billing_page",
            "response": "upgrade_prompt",
            "owner": "owner_7f3a",
            "due_at": datetime(2026, 11, 21, 9, tzinfo=UTC),
            "expansion_mrr_potential": 120.0,
            "score": 81.256,
            "tier": "high",
            "explanation": "3 seat-limit hits in 7 days; 90% seat use",
            "email": f"person{i}@example.com",  # must never reach a payload
        }
        for i in range(n + 2)
    ]
    return pl.DataFrame(rows)


def expected_rows(n: int = 9) -> int:
    """in_product -> inapp, sdr -> crm, ae_cs -> crm + slack."""
    return sum(2 if ROUTES[i % 3] == "ae_cs" else 1 for i in range(n))


def fast_config(**delivery_settings) -> delivery.DestinationsConfig:
    settings = {
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "connect_timeout_s": 0.5,
        "read_timeout_s": 0.5,
        "max_attempts": 4,
        "concurrency": 4,
        "max_retry_after_s": 3.0,
        **delivery_settings,
    }
    return delivery.load_destinations().model_copy(
        update={"delivery": delivery.DeliverySettings(**settings)}
    )


def receiver_secrets() -> dict[str, str]:
    return {f"/{name}": secret for name, secret in SECRETS.items()}


def endpoints(base_url: str) -> dict[str, delivery.Endpoint]:
    return {name: delivery.Endpoint(f"{base_url}/{name}", s) for name, s in SECRETS.items()}


def read_ledger(path) -> pl.DataFrame:
    with warehouse.connect(path) as con:
        return ledger.read(con)


def test_outbox_has_one_row_per_eligible_trigger_and_destination_with_allow_listed_fields():
    config = delivery.load_destinations()
    outbox = delivery.build_outbox(candidates(), config)
    assert outbox.height == expected_rows()
    assert not set(outbox["trigger_id"]) & {"t009", "t010"}  # suppressed, holdout
    pairs = set(outbox.select("trigger_id", "destination").iter_rows())
    assert ("t002", "crm") in pairs and ("t002", "slack") in pairs and ("t000", "inapp") in pairs
    assert outbox["idempotency_key"].n_unique() == outbox.height
    payloads = {d: json.loads(p) for d, p in outbox.select("destination", "payload").iter_rows()}
    assert set(payloads["inapp"]) == {
        "type", "trigger_id", "account_id", "user_id", "trigger_type", "program", "surface",
        "response", "copy", "expires_at",
    }  # fmt: skip
    assert payloads["inapp"]["expires_at"] == "2026-11-23T00:00:00+00:00"  # as_of + 72 h
    assert payloads["crm"]["owner"] == "owner_7f3a" and payloads["crm"]["due_at"].startswith(
        "2026-11-21T09"
    )
    assert "PQL 81.26 (high)" in payloads["crm"]["subject"]
    assert "owner_7f3a" in payloads["slack"]["text"]
    assert "example.com" not in "".join(outbox["payload"])
    assert delivery.build_outbox(candidates(), config).equals(outbox)  # same bytes every run


def test_payload_that_looks_like_pii_is_refused():
    frame = candidates().with_columns(explanation=pl.lit("asked by jane@corp.io"))
    with pytest.raises(ValueError, match="email or IP"):
        delivery.build_outbox(frame, delivery.load_destinations())


def test_route_without_destinations_is_an_error():
    frame = candidates().with_columns(route=pl.lit("carrier_pigeon"))
    with pytest.raises(ValueError, match="carrier_pigeon"):
        delivery.build_outbox(frame, delivery.load_destinations())


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (("routes:\n  in_product: [inapp]", "routes:\n  in_product: [fax]"), "routes"),
        (("{program} unlocks", "{email} unlocks"), "destinations.inapp.template"),
        (("url_env: PLG_CRM_URL", "url_env: crm url"), "destinations.crm.url_env"),
        (("max_attempts: 5", "max_attempts: 0"), "delivery.max_attempts"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path, edit, key):
    text = delivery.config_path(delivery.CONFIG_FILE).read_text()
    assert edit[0] in text
    (tmp_path / delivery.CONFIG_FILE).write_text(text.replace(edit[0], edit[1]))
    with pytest.raises(ConfigError) as err:
        delivery.load_destinations(tmp_path)
    assert err.value.key == key and str(tmp_path) in str(err.value)


def test_missing_environment_variable_is_named():
    env = {"PLG_INAPP_URL": "http://x", "PLG_INAPP_SECRET": "s", "PLG_CRM_URL": "http://y"}
    with pytest.raises(ConfigError, match="PLG_CRM_SECRET"):
        delivery.endpoints_from_env(delivery.load_destinations(), env)


def test_delivers_each_row_once_signed_and_a_rerun_sends_nothing(tmp_path):
    db = tmp_path / "wh.duckdb"
    with Receiver(receiver_secrets()) as rx:
        first = delivery.run_actions(db, candidates(), fast_config(), endpoints(rx.base_url))
        assert first.enqueued == expected_rows() and first.outcomes == {
            "delivered": expected_rows()
        }
        assert all(r.signature_ok and r.outcome == "applied" for r in rx.requests)
        assert set(rx.requests_by_key().values()) == {1}
        again = delivery.run_actions(db, candidates(), fast_config(), endpoints(rx.base_url))
        assert (again.enqueued, again.rows_sent) == (0, 0)
        assert len(rx.requests) == expected_rows()
    table = read_ledger(db)
    assert table["status"].to_list() == ["delivered"] * expected_rows()
    assert table["attempts"].to_list() == [1] * expected_rows()
    assert table["delivered_at"].null_count() == 0
    sent = {r.idempotency_key: json.loads(r.body) for r in rx.requests}
    assert sent == {
        k: json.loads(p) for k, p in table.select("idempotency_key", "payload").iter_rows()
    }


def test_dry_run_records_without_sending_and_the_real_run_sends(tmp_path):
    db = tmp_path / "wh.duckdb"
    with Receiver(receiver_secrets()) as rx:
        dry = delivery.run_actions(db, candidates(), fast_config(), None, dry_run=True)
        assert dry.enqueued == expected_rows() and rx.requests == []
        assert set(read_ledger(db)["status"]) == {"dry_run"}
        real = delivery.run_actions(db, candidates(), fast_config(), endpoints(rx.base_url))
        assert real.enqueued == 0 and real.outcomes == {"delivered": expected_rows()}
        assert len(rx.effects) == expected_rows()


def test_bad_signature_is_rejected_without_retry(tmp_path):
    db = tmp_path / "wh.duckdb"
    with Receiver({**receiver_secrets(), "/crm": "another-secret"}) as rx:
        report = delivery.run_actions(db, candidates(), fast_config(), endpoints(rx.base_url))
    table = read_ledger(db).filter(pl.col("destination") == "crm")
    assert report.outcomes["failed"] == table.height == 6
    assert table["attempts"].to_list() == [1] * 6 and table["http_status"].to_list() == [401] * 6
    assert all("bad signature" in e for e in table["last_error"])


def test_new_triggers_are_added_and_existing_rows_never_reinserted(tmp_path):
    db = tmp_path / "wh.duckdb"
    config = fast_config()
    with warehouse.connect(db) as con:
        assert ledger.enqueue(con, delivery.build_outbox(candidates(3), config)) == 4
        assert ledger.enqueue(con, delivery.build_outbox(candidates(6), config)) == 4
        assert ledger.enqueue(con, delivery.build_outbox(candidates(6), config)) == 0
        assert len(ledger.pending(con)) == 8


def test_asset_materializes_ledger_with_counts(tmp_path):
    lake_dir = tmp_path / "lake"
    lake.write_parquet(candidates(), lake.table_path(lake_dir, "trigger_candidates"))
    settings = PipelineSettings(warehouse_path=str(tmp_path / "wh.duckdb"), lake_dir=str(lake_dir))
    with Receiver(receiver_secrets()) as rx:
        resource = DestinationsResource(
            endpoints={
                n: EndpointConfig(url=e.url, secret=e.secret)
                for n, e in endpoints(rx.base_url).items()
            }
        )
        result = dg.materialize(
            [action_deliveries], resources={"settings": settings, "destinations": resource}
        )
    assert result.success
    meta = result.asset_materializations_for_node("marts__action_deliveries")[0].metadata
    assert meta["dagster/row_count"].value == expected_rows()
    assert meta["rows_by_status"].value == {"delivered": expected_rows()}
    assert meta["rows_by_destination_status"].value == {
        "crm/delivered": 6,
        "inapp/delivered": 3,
        "slack/delivered": 3,
    }
    assert len(meta["preview"].value.records) == expected_rows()
    assert len(rx.effects) == expected_rows()


def test_candidates_fall_back_to_the_warehouse(tmp_path):
    db = tmp_path / "wh.duckdb"
    assert delivery.read_candidates(tmp_path / "lake", db) is None
    with warehouse.connect(db) as con:
        warehouse.publish(con, "trigger_candidates", candidates())
    assert delivery.read_candidates(tmp_path / "lake", db).height == candidates().height
