"""Shared pieces of the end-to-end tests: a small generated world, the environment a run reads,
one in-process materialization of the whole graph, and readers over the warehouse and the lake.

Nothing here stands in for our own components: the world comes from the real generator, runs go
through the real definitions, deliveries to the real local receiver on 127.0.0.1.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from plg_pipeline.lib.delivery import load_destinations
from plg_pipeline.lib.generator import generate
from plg_pipeline.lib.ingest import arrival_days
from plg_pipeline.receiver import Receiver

REPO = Path(__file__).resolve().parent.parent
HASH_KEY = "e2e-hash-key"
IPV4 = r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b(?:/\d+)?"


@dataclass(frozen=True)
class World:
    """A generated raw root and where one pipeline writes its lake and warehouse."""

    raw: Path
    warehouse: Path

    @property
    def lake(self) -> Path:
        return self.warehouse.parent / "lake"

    @property
    def days(self) -> list[date]:
        return arrival_days(self.raw)

    def env(self) -> dict[str, str]:
        return {
            "PLG_RAW_DIR": str(self.raw),
            "PLG_WAREHOUSE": str(self.warehouse),
            "PLG_HASH_KEY": HASH_KEY,
        }

    def with_warehouse(self, warehouse: Path) -> World:
        return World(self.raw, warehouse)


def make_world(
    base: Path, *, accounts: int = 30, days: int = 24, seed: int = 11, bad_rate: float = 0.01
) -> World:
    """Generate a small world under `base` (raw/ and wh/warehouse.duckdb)."""
    generate(base / "raw", accounts=accounts, days=days, seed=seed, bad_rate=bad_rate)
    return World(base / "raw", base / "wh" / "warehouse.duckdb")


def dagster_home(base: Path) -> Path:
    """A DAGSTER_HOME holding the project's dagster.yaml (pools, run limits)."""
    base.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", base / "dagster.yaml")
    return base


@contextmanager
def run_env(world: World, config_dir: Path | None = None) -> Iterator[Receiver]:
    """The environment one run reads, with every destination pointed at a local receiver."""
    dests = load_destinations().destinations
    secrets = {f"/{name}": f"secret-{name}" for name in dests}
    with pytest.MonkeyPatch.context() as mp, Receiver(secrets) as rx:
        for key, value in world.env().items():
            mp.setenv(key, value)
        mp.delenv("PLG_LAKE_DIR", raising=False)
        if config_dir is None:
            mp.delenv("PLG_CONFIG_DIR", raising=False)
        else:
            mp.setenv("PLG_CONFIG_DIR", str(config_dir))
        for name, dest in dests.items():
            mp.setenv(dest.url_env, f"{rx.base_url}/{name}")
            mp.setenv(dest.secret_env, secrets[f"/{name}"])
        yield rx


def materialize(
    world: World, start: date | None = None, end: date | None = None
) -> dg.ExecuteInProcessResult:
    """Every asset for arrival days start..end (default: all) in one single-run backfill."""
    from plg_pipeline.definitions import defs

    days = world.days
    tags = {
        "dagster/asset_partition_range_start": (start or days[0]).isoformat(),
        "dagster/asset_partition_range_end": (end or days[-1]).isoformat(),
    }
    job = defs.resolve_job_def("pipeline_job")
    with run_env(world), dg.DagsterInstance.ephemeral() as instance:
        return job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)


def failures(result: dg.ExecuteInProcessResult) -> list[str]:
    """Failed steps and failed blocking checks, for assertion messages."""
    steps = [e.step_key for e in result.all_events if e.is_step_failure]
    checks = [c.check_name for c in result.get_asset_check_evaluations() if not c.passed]
    return steps + checks


def warehouse_tables(path: Path) -> list[tuple[str, str]]:
    """(schema, table) of every base table and view in the warehouse file."""
    with duckdb.connect(str(path), read_only=True) as con:
        return [
            (s, t)
            for s, t in con.execute(
                "select table_schema, table_name from information_schema.tables "
                "where table_catalog = current_database() order by 1, 2"
            ).fetchall()
        ]


def read_warehouse(path: Path, schema: str = "marts") -> dict[str, pl.DataFrame]:
    """Every table of `schema` as a frame."""
    with duckdb.connect(str(path), read_only=True) as con:
        names = [
            r[0]
            for r in con.execute(
                "select table_name from information_schema.tables "
                "where table_schema = ? and table_type = 'BASE TABLE' order by 1",
                [schema],
            ).fetchall()
        ]
        return {
            n: pl.from_arrow(con.sql(f'select * from "{schema}"."{n}"').to_arrow_table())
            for n in names
        }


def all_frames(world: World) -> Iterator[tuple[str, pl.DataFrame]]:
    """Every table and view of every schema in the warehouse, and every Parquet file in the lake."""
    with duckdb.connect(str(world.warehouse), read_only=True) as con:
        for schema, table in warehouse_tables(world.warehouse):
            sql = f'select * from "{schema}"."{table}"'
            yield f"warehouse:{schema}.{table}", pl.from_arrow(con.sql(sql).to_arrow_table())
    for path in sorted(world.lake.rglob("*.parquet")):
        yield f"lake:{path.relative_to(world.lake)}", pl.read_parquet(path)


def string_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame's text: string columns, and nested/list ones cast to their JSON text."""
    cols = []
    for name, dtype in frame.schema.items():
        if dtype == pl.String:
            cols.append(pl.col(name))
        elif isinstance(dtype, pl.Struct):
            cols.append(pl.col(name).struct.json_encode())
        elif isinstance(dtype, (pl.List, pl.Array)):
            items = pl.col(name).cast(pl.List(dtype.inner)).list.eval(pl.element().cast(pl.String))
            cols.append(items.list.join("\n"))
    return frame.select(cols) if cols else pl.DataFrame()


def find_substrings(frame: pl.DataFrame, needles: list[str]) -> dict[str, list[str]]:
    """Column -> needles found in it (Aho-Corasick over each string column, case-insensitive)."""
    found = {}
    text = string_columns(frame)
    for name in text.columns:
        hits = (
            text.select(
                pl.col(name)
                .str.extract_many(needles, ascii_case_insensitive=True, overlapping=True)
                .explode()
                .drop_nulls()
                .unique()
            )
            .to_series()
            .to_list()
        )
        if hits:
            found[name] = hits
    return found


def find_ips(frame: pl.DataFrame, ips: set[str]) -> dict[str, list[str]]:
    """Column -> full (untruncated) IPv4 addresses of `ips` that appear as whole tokens."""
    found = {}
    text = string_columns(frame)
    for name in text.columns:
        tokens = (
            text.select(pl.col(name).str.extract_all(IPV4).explode().drop_nulls().unique())
            .to_series()
            .to_list()
        )
        hits = sorted(t for t in tokens if "/" not in t and t in ips)
        if hits:
            found[name] = hits
    return found


def truth_pii(raw: Path) -> dict[str, list[str]]:
    """kind -> values of the generator's `_truth/pii.csv` (email, name, ip)."""
    frame = pl.read_csv(raw / "_truth" / "pii.csv")
    return {
        kind: sorted(set(group["value"].to_list()))
        for (kind,), group in frame.group_by("kind", maintain_order=True)
    }


def ids_in_text(frame: pl.DataFrame, ids: list[str]) -> dict[str, list[str]]:
    """Column -> ids found as whole tokens (an id is never a prefix of a longer id here)."""
    found = find_substrings(frame, ids)
    if not found:
        return {}
    pattern = re.compile("|".join(rf"(?<![\w-]){re.escape(i)}(?![\w-])" for i in ids))
    exact = {}
    text = string_columns(frame)
    for name in found:
        hits = sorted(
            {m.group(0) for v in text[name].drop_nulls().unique() for m in pattern.finditer(v)}
        )
        if hits:
            exact[name] = hits
    return exact


def table_differences(
    before: dict[str, pl.DataFrame],
    after: dict[str, pl.DataFrame],
    exclude: dict[str, list[str]],
) -> dict[str, str]:
    """Table -> what differs between two snapshots of the marts (rows compared in sorted order,
    `exclude` columns left out); empty when every table is identical."""
    out = {}
    for name in sorted(set(before) | set(after)):
        if name not in before or name not in after:
            out[name] = "only in one snapshot"
            continue
        old, new = (
            f.drop([c for c in exclude.get(name, []) if c in f.columns])
            for f in (before[name], after[name])
        )
        if old.schema != new.schema:
            out[name] = f"schema {old.schema} != {new.schema}"
            continue
        if old.height != new.height:
            out[name] = f"rows {old.height} != {new.height}"
            continue
        floats = [c for c, t in old.schema.items() if t.is_float()]
        keys = [c for c in old.columns if c not in floats] + floats
        old, new = old.sort(keys, nulls_last=True), new.sort(keys, nulls_last=True)
        cols = [c for c in old.columns if not old[c].equals(new[c], null_equal=True)]
        if cols:
            detail = {
                c: (
                    old.filter(old[c].ne_missing(new[c]))[c].head(2).to_list(),
                    new.filter(old[c].ne_missing(new[c]))[c].head(2).to_list(),
                )
                for c in cols[:4]
            }
            out[name] = f"columns {cols}: {detail}"
    return out
