"""plg-pipeline: generate demo data, run the whole graph locally, benchmark, open the UI."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
from datetime import date
from pathlib import Path

DEFAULT_RAW = "data/raw"
DEFAULT_WAREHOUSE = "data/warehouse.duckdb"
SUMMARY_TABLES = (
    "events",
    "quarantined_events",
    "identity_map",
    "account_daily",
    "pql_scores",
    "trigger_candidates",
    "action_deliveries",
)


def _env_defaults(raw: str | None, warehouse: str | None) -> None:
    """Paths from flags, else the environment, else the defaults; the dev hash key, loudly."""
    os.environ["PLG_RAW_DIR"] = str(
        Path(raw or os.environ.get("PLG_RAW_DIR", DEFAULT_RAW)).resolve()
    )
    os.environ["PLG_WAREHOUSE"] = str(
        Path(warehouse or os.environ.get("PLG_WAREHOUSE", DEFAULT_WAREHOUSE)).resolve()
    )
    if not os.environ.get("PLG_HASH_KEY"):
        from plg_pipeline.defs.resources import DEV_HASH_KEY

        os.environ["PLG_HASH_KEY"] = DEV_HASH_KEY
        print(
            "note: PLG_HASH_KEY is not set; using the documented development key. "
            "Set a secret key before loading real user data.",
            file=sys.stderr,
        )


def _local_receiver_if_unconfigured():
    """Demo runs need no outside service: unset destinations go to a local receiver, said loudly."""
    import secrets as token

    from plg_pipeline.lib.delivery import load_destinations
    from plg_pipeline.receiver import Receiver

    dests = load_destinations().destinations
    missing = {n: d for n, d in dests.items() if not os.environ.get(d.url_env)}
    if not missing:
        return None
    secret_by_path = {f"/{n}": token.token_hex(16) for n in missing}
    receiver = Receiver(secret_by_path)
    base = receiver.start()
    for name, dest in missing.items():
        os.environ[dest.url_env] = f"{base}/{name}"
        os.environ[dest.secret_env] = secret_by_path[f"/{name}"]
    print(
        f"note: {', '.join(sorted(missing))} not configured; delivering to a local receiver at {base}",
        file=sys.stderr,
    )
    return receiver


def _instance():
    """The local Dagster instance: $DAGSTER_HOME, else ./.dagster_home with the project's dagster.yaml."""
    import dagster as dg

    if not os.environ.get("DAGSTER_HOME"):
        home = Path(".dagster_home").resolve()
        home.mkdir(exist_ok=True)
        if Path("dagster.yaml").exists() and not (home / "dagster.yaml").exists():
            shutil.copy("dagster.yaml", home / "dagster.yaml")
        os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def _watch_progress(instance, run_id: str, total: int, done: threading.Event) -> None:
    """Advance a progress bar as steps finish, read from the run's event log."""
    import dagster as dg
    from tqdm import tqdm

    seen: set[str] = set()
    with tqdm(total=total, unit="step", desc="pipeline") as bar:
        while True:
            finished = done.wait(0.5)
            for of_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
                records = instance.get_records_for_run(run_id, of_type=of_type).records
                for rec in records:
                    key = rec.event_log_entry.step_key
                    if key and key not in seen:
                        seen.add(key)
                        bar.set_postfix_str(key[:40])
                        bar.update(1)
            if finished:
                return


def _config_problem(raw_dir: Path) -> str | None:
    """Every business-rule file validated before the run: a bad file stops here in seconds,
    naming file and key, instead of failing one step minutes into the run."""
    from plg_pipeline.lib import activity, catalog, delivery, ingest, quality, scoring, signals
    from plg_pipeline.lib.configfile import ConfigError
    from plg_pipeline.lib.pipeline_config import pipeline_config
    from plg_pipeline.lib.plans import load_plans
    from plg_pipeline.lib.trigger_rules import load_triggers

    loaders = (
        pipeline_config,
        catalog.load_catalog,
        ingest.load_ingest_config,
        activity.load_activity_config,
        quality.load_quality_config,
        scoring.load_scoring_config,
        signals.load_signals_config,
        delivery.load_destinations,
        lambda: load_triggers(plans=load_plans(raw_dir)),
    )
    try:
        for load in loaders:
            load()
    except ConfigError as exc:
        return str(exc)
    return None


def cmd_run(args: argparse.Namespace) -> int:
    _env_defaults(args.raw, args.warehouse)
    problem = _config_problem(Path(os.environ["PLG_RAW_DIR"]))
    if problem:
        print(f"config error: {problem}", file=sys.stderr)
        return 2
    from dagster._core.utils import make_new_run_id

    from plg_pipeline.manifest import ensure_dbt_manifest

    ensure_dbt_manifest()

    from plg_pipeline.definitions import defs
    from plg_pipeline.lib.ingest import arrival_days

    days = [
        d
        for d in arrival_days(Path(os.environ["PLG_RAW_DIR"]))
        if (args.start is None or d >= args.start) and (args.end is None or d <= args.end)
    ]
    if not days:
        print(f"no arrival days under {os.environ['PLG_RAW_DIR']}/events", file=sys.stderr)
        return 2
    instance = _instance()
    receiver = _local_receiver_if_unconfigured()
    job = defs.resolve_job_def("pipeline_job")
    run_id = make_new_run_id()
    total = (
        len(job.execution_plan_snapshot().steps)
        if hasattr(job, "execution_plan_snapshot")
        else len(job.nodes)
    )
    done = threading.Event()
    watcher = threading.Thread(
        target=_watch_progress, args=(instance, run_id, total, done), daemon=True
    )
    watcher.start()
    try:
        result = job.execute_in_process(
            # the progress bar and summary speak for the run; step logs stay in the instance
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            instance=instance,
            run_id=run_id,
            raise_on_error=False,
            tags={
                "dagster/asset_partition_range_start": days[0].isoformat(),
                "dagster/asset_partition_range_end": days[-1].isoformat(),
            },
        )
    finally:
        done.set()
        watcher.join()
    _print_summary(days, result)
    if receiver is not None:
        print(
            f"local receiver: {len(receiver.requests)} requests, {len(receiver.effects)} deliveries applied"
        )
        receiver.stop()
    return 0 if result.success else 1


def _print_summary(days: list[date], result) -> None:
    from plg_pipeline.lib import warehouse

    failed = [e.step_key for e in result.all_events if e.is_step_failure]
    checks = result.get_asset_check_evaluations()
    print(f"\narrival days: {days[0]} .. {days[-1]} ({len(days)})")
    print(f"run {result.run_id}: {'success' if result.success else 'FAILED'}")
    if failed:
        print("failed steps: " + ", ".join(failed))
    bad_checks = [c.check_name for c in checks if not c.passed]
    print(
        f"asset checks: {len(checks) - len(bad_checks)} passed, {len(bad_checks)} failed {bad_checks or ''}"
    )
    with warehouse.connect(os.environ["PLG_WAREHOUSE"], read_only=True) as con:
        for table in SUMMARY_TABLES:
            if warehouse.table_exists(con, table):
                n = con.execute(f'select count(*) from marts."{table}"').fetchall()[0][0]
                print(f"  marts.{table:<22} {n:>12,} rows")
    print(f"warehouse: {os.environ['PLG_WAREHOUSE']}")


def cmd_generate(args: argparse.Namespace) -> int:
    from plg_pipeline.lib.generator import generate

    summary = generate(
        Path(args.out),
        accounts=args.accounts,
        days=args.days,
        seed=args.seed,
        start=args.start,
        bad_rate=args.bad_rate,
        fmt=args.format,
    )
    for key, value in summary.as_dict().items():
        print(f"{key:>14}: {value}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    _env_defaults(args.raw, args.warehouse)
    _instance()
    # dagster dev parses the dbt project with plain `dbt`: the venv's must be found unactivated
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    cmd = [
        "dagster",
        "dev",
        "-h",
        "127.0.0.1",
        "-p",
        str(args.port),
        "-m",
        "plg_pipeline.definitions",
    ]
    os.execvp(cmd[0], cmd)
    return 0


def main(argv: list[str] | None = None) -> int:
    import warnings

    # beta/preview notices are for us, not for someone running the pipeline
    warnings.filterwarnings("ignore", message=r".*(beta|preview|superseded).*")
    parser = argparse.ArgumentParser(prog="plg-pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write a demo raw root that follows CONTRACT.md")
    gen.add_argument("--out", default=DEFAULT_RAW)
    gen.add_argument("--accounts", type=int, default=200)
    gen.add_argument("--days", type=int, default=90)
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--start", type=date.fromisoformat, default=date(2026, 6, 1))
    gen.add_argument("--bad-rate", type=float, default=0.0)
    gen.add_argument("--format", choices=["jsonl", "jsonl.gz", "parquet"], default="jsonl")
    gen.set_defaults(func=cmd_generate)

    run = sub.add_parser(
        "run", help="materialize every asset for every arrival day in the raw root"
    )
    run.add_argument("--raw", help="raw root (env PLG_RAW_DIR, default data/raw)")
    run.add_argument(
        "--warehouse", help="DuckDB file (env PLG_WAREHOUSE, default data/warehouse.duckdb)"
    )
    run.add_argument("--start", type=date.fromisoformat, help="first arrival day to process")
    run.add_argument("--end", type=date.fromisoformat, help="last arrival day to process")
    run.set_defaults(func=cmd_run)

    ui = sub.add_parser("ui", help="open the Dagster UI on 127.0.0.1 with this code location")
    ui.add_argument("--raw")
    ui.add_argument("--warehouse")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=cmd_ui)

    from plg_pipeline.evaluate import add_parser as add_evaluate

    add_evaluate(sub)

    from plg_pipeline.bench import add_parser as add_bench_parser

    add_bench_parser(sub)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
