"""Turn the demo world's events into landed files, with the mess of real collection.

Arrival times, retries and malformed rows are decided on compact numeric columns for all
events at once; the JSON text is built one output file at a time, so a 10M-event world never
holds all its text in memory. Every random draw happens before the (threaded) file writes, so
the bytes do not depend on scheduling.
"""

from __future__ import annotations

import gzip
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl

from plg_pipeline.lib.generator_lifecycle import USER_AGENTS, anon_ids
from plg_pipeline.lib.generator_world import DAY_S, TZ_OFFSETS_MIN, World

BAD_KINDS = (
    "invalid_json",
    "missing_message_id",
    "no_user_or_anonymous_id",
    "unparseable_timestamp",
    "future_timestamp",
    "track_without_event",
    "properties_not_object",
    "user_id_number",
    "unknown_type",
)
FIELDS = (
    "messageId",
    "type",
    "event",
    "name",
    "userId",
    "anonymousId",
    "previousId",
    "groupId",
    "timestamp",
    "sentAt",
    "receivedAt",
    "properties",
    "traits",
    "context",
)
RAW_JSON = {"properties", "traits", "context"}
DUPLICATE_RATE, LATE_RATE = 0.01, 0.03
GZIP_LEVEL = 1  # JSON lines still shrink ~8x; higher levels cost the benchmark most of its time
SIDECAR = 99  # file number of the jsonl sidecar for rows a parquet string column cannot hold


def arrive(events: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """Sequence numbers (message ids), arrival times (3% of them 1-3 days late), jitter."""
    n = events.height
    late = rng.random(n) < LATE_RATE
    delay = np.where(
        late,
        rng.integers(1, 4, n) * DAY_S * 1000 + rng.integers(0, 3_600_000, n),
        rng.integers(50, 3000, n),
    )
    return events.with_columns(
        seq=pl.int_range(n, dtype=pl.Int64),
        late=pl.lit(late),
        recv=pl.col("ts") + pl.lit(delay),
        sent_lag=pl.lit(rng.integers(5, 50, n)),
        mid=pl.lit(rng.integers(10_000, 100_000, n)),
    ).with_columns(dt=pl.col("recv") // (DAY_S * 1000))


def add_mess(frame: pl.DataFrame, rng: np.random.Generator, bad_rate: float) -> pl.DataFrame:
    """Exact retries (~1%, some in a later folder) and, with bad_rate, malformed rows."""
    n = frame.height
    frame = frame.with_columns(
        dup=pl.lit(False), bad_kind=pl.lit(None, pl.String), future=pl.lit(0, pl.Int64)
    )
    dup_idx = np.flatnonzero(rng.random(n) < DUPLICATE_RATE)
    shift = np.where(rng.random(len(dup_idx)) < 0.3, rng.integers(1, 3, len(dup_idx)), 0)
    parts = [frame, frame[dup_idx].with_columns(dt=pl.col("dt") + pl.lit(shift), dup=pl.lit(True))]
    if bad_rate > 0:
        n_bad = max(len(BAD_KINDS), round(bad_rate * (n + len(dup_idx)) / (1 - bad_rate)))
        tracks = np.flatnonzero(frame["type"].to_numpy() == "track")
        kinds = pl.Series(BAD_KINDS).gather(pl.Series(rng.permutation(n_bad) % len(BAD_KINDS)))
        bad = frame[tracks[rng.integers(0, len(tracks), n_bad)]].with_columns(
            bad_kind=kinds,
            seq=pl.int_range(n, n + n_bad, dtype=pl.Int64),
            future=pl.lit(rng.integers(2, 30, n_bad)),
        )
        parts.append(bad)
    return pl.concat(parts, rechunk=False)


def _iso_utc(ms: pl.Expr) -> pl.Expr:
    return pl.from_epoch(ms, time_unit="ms").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")


class _Formatter:
    """Per-user lookups (ids, devices, offsets) to render one file's rows as Segment fields."""

    def __init__(self, world: World, epoch_ms: int):
        self.epoch_ms = epoch_ms
        n = world.n_users
        offsets = np.array(TZ_OFFSETS_MIN)[world.u_tz]
        suffix = [
            f"{'+' if o > 0 else '-'}{abs(o) // 60:02d}:{abs(o) % 60:02d}" if o else "Z"
            for o in offsets
        ]
        ua = np.array(USER_AGENTS)[np.arange(n) % (len(USER_AGENTS) - 1)]
        # one row per (user, device): index = uid * 2 + device - 1
        self.lookup = pl.DataFrame(
            {
                "anon": np.stack([anon_ids(world, 1), anon_ids(world, 2)], axis=1).ravel(),
                "ip": world.u_ips.ravel(),
                "ua": np.stack([ua, np.full(n, USER_AGENTS[-1])], axis=1).ravel(),
                "offset_ms": np.repeat(offsets.astype(np.int64) * 60_000, 2),
                "suffix": np.repeat(suffix, 2),
            }
        )

    def fields(self, g: pl.DataFrame) -> pl.DataFrame:
        """Segment fields as text (properties, traits, context as raw JSON)."""
        key = pl.Series(g["uid"].to_numpy() * 2 + g["dev"].to_numpy() - 1)
        g = pl.concat([g, self.lookup[key]], how="horizontal")
        base = self.epoch_ms
        in_account = pl.col("type").is_in(["track", "page", "screen"]) & (pl.col("acc") >= 0)
        out = g.select(
            messageId=pl.format(
                "ajs-{}-{}", pl.col("seq").cast(pl.String).str.zfill(9), pl.col("mid")
            ),
            type="type",
            event="event",
            name="name",
            userId=pl.when(~pl.col("anon_only")).then(
                pl.concat_str([pl.lit("usr_"), pl.col("uid").cast(pl.String).str.zfill(6)])
            ),
            anonymousId="anon",
            previousId="previousId",
            groupId="groupId",
            timestamp=pl.from_epoch(
                pl.col("ts") + pl.col("offset_ms") + base, time_unit="ms"
            ).dt.strftime("%Y-%m-%dT%H:%M:%S%.3f")
            + pl.col("suffix"),
            sentAt=_iso_utc(pl.col("recv") + base - pl.col("sent_lag")),
            receivedAt=_iso_utc(pl.col("recv") + base),
            properties="properties",
            traits="traits",
            context=pl.concat_str(
                [
                    pl.lit('{"ip":"'),
                    pl.col("ip"),
                    pl.lit('","userAgent":"'),
                    pl.col("ua"),
                    pl.lit('"'),
                    pl.when(in_account)
                    .then(
                        pl.format(',"groupId":"acc_{}"', pl.col("acc").cast(pl.String).str.zfill(5))
                    )
                    .otherwise(pl.lit("")),
                    pl.lit("}"),
                ]
            ),
            bad_kind="bad_kind",
            future="future",
            recv="recv",
        )
        if out["bad_kind"].null_count() == out.height:
            return out
        k = pl.col("bad_kind")
        return out.with_columns(
            messageId=pl.when(k == "missing_message_id").then(None).otherwise("messageId"),
            type=pl.when(k == "unknown_type").then(pl.lit("purchase")).otherwise("type"),
            event=pl.when(k == "track_without_event").then(None).otherwise("event"),
            userId=pl.when(k == "no_user_or_anonymous_id").then(None).otherwise("userId"),
            anonymousId=pl.when(k == "no_user_or_anonymous_id").then(None).otherwise("anonymousId"),
            timestamp=pl.when(k == "unparseable_timestamp")
            .then(pl.lit("31/02/2026 25:61"))
            .when(k == "future_timestamp")
            .then(_iso_utc(pl.col("recv") + base + pl.col("future") * DAY_S * 1000))
            .otherwise("timestamp"),
            properties=pl.when(k == "properties_not_object")
            .then(pl.lit('"not-an-object"'))
            .otherwise("properties"),
        )


def lines(fields: pl.DataFrame) -> str:
    """JSON lines for rendered rows: null fields left out, raw-text bad kinds applied."""
    pieces = [
        pl.concat_str([pl.lit(f',"{f}":'), pl.col(f)])
        if f in RAW_JSON
        else pl.concat_str([pl.lit(f',"{f}":"'), pl.col(f), pl.lit('"')])
        for f in FIELDS
    ]
    line = pl.concat_str(
        [pl.lit("{"), pl.concat_str(pieces, ignore_nulls=True).str.strip_prefix(","), pl.lit("}")]
    )
    frame = fields.select(line=line, bad_kind="bad_kind", props="properties")
    if frame["bad_kind"].null_count() < frame.height:
        k = pl.col("bad_kind")
        frame = frame.with_columns(
            line=pl.when(k == "user_id_number")
            .then(pl.col("line").str.replace(r'"userId":"usr_0*(\d+)"', r'"userId":$1'))
            .when(k == "invalid_json")
            .then(pl.col("line").str.head(pl.col("props").str.len_chars() + 40))
            .otherwise("line")
        )
    return frame["line"].str.join("\n").item() + "\n"


def place(frame: pl.DataFrame, rng: np.random.Generator, fmt: str) -> pl.DataFrame:
    """Split each arrival day into 1-3 files; order rows by file and arrival; number the lines."""
    files_per_dt = rng.integers(1, 4, int(frame["dt"].max()) + 1)
    file_no = (rng.random(frame.height) * files_per_dt[frame["dt"].to_numpy()]).astype(np.int64)
    frame = frame.with_columns(file=pl.lit(file_no))
    if fmt == "parquet":  # a parquet string column cannot hold a numeric userId
        frame = frame.with_columns(
            file=pl.when(pl.col("bad_kind") == "user_id_number")
            .then(SIDECAR)
            .otherwise(pl.col("file"))
        )
    frame = frame.sort("dt", "file", "recv", "seq")
    return frame.with_columns(line=pl.int_range(1, pl.len() + 1).over("dt", "file"))


def write_events(
    out: Path, frame: pl.DataFrame, world: World, fmt: str, rng: np.random.Generator, epoch_ms: int
) -> tuple[int, list[dict]]:
    """Write the placed rows file by file; return the file count and the bad-line truth."""
    formatter = _Formatter(world, epoch_ms)

    def path_of(dt: int, file: int) -> str:
        ext = "jsonl" if file == SIDECAR else fmt
        return f"events/dt={day(world, dt)}/part-{file:03d}.{ext}"

    def write(group: pl.DataFrame) -> None:
        path = out / path_of(group["dt"][0], group["file"][0])
        path.parent.mkdir(parents=True, exist_ok=True)
        fields = formatter.fields(group)
        if path.suffix == ".parquet":
            invalid = pl.col("bad_kind") == "invalid_json"
            fields.with_columns(
                properties=pl.when(invalid)
                .then(pl.col("properties").str.head(12))
                .otherwise("properties")
            ).select(FIELDS).write_parquet(path, statistics=False)
            return
        data = lines(fields).encode()
        path.write_bytes(gzip.compress(data, GZIP_LEVEL, mtime=0) if path.suffix == ".gz" else data)

    sizes = frame.group_by("dt", "file", maintain_order=True).len()["len"].to_numpy()
    offsets = np.cumsum(sizes) - sizes
    with ThreadPoolExecutor(max_workers=2) as pool:  # slices are views: no copy of the frame
        list(pool.map(write, (frame.slice(o, n) for o, n in zip(offsets, sizes, strict=True))))
    bad = [
        {"file": path_of(dt, file), "line": line, "kind": kind}
        for dt, file, line, kind in frame.filter(pl.col("bad_kind").is_not_null())
        .select("dt", "file", "line", "bad_kind")
        .iter_rows()
    ]
    if not bad:
        return len(sizes), bad
    # one empty file and one gzip stream cut mid-way (holding retries of that day's lines)
    days = frame["dt"].unique().sort().to_list()
    empty_dt, cut_dt = (days[i] for i in rng.integers(0, len(days), 2))
    empty = out / f"events/dt={day(world, empty_dt)}/part-901.jsonl"
    empty.write_bytes(b"")
    cut_rows = frame.filter((pl.col("dt") == cut_dt) & pl.col("bad_kind").is_null()).head(200)
    blob = gzip.compress(lines(formatter.fields(cut_rows)).encode(), 6, mtime=0)
    cut = out / f"events/dt={day(world, cut_dt)}/part-900.jsonl.gz"
    cut.write_bytes(blob[: len(blob) * 6 // 10])
    bad += [
        {"file": str(p.relative_to(out)), "line": None, "kind": kind}
        for p, kind in ((empty, "empty_file"), (cut, "truncated_gzip"))
    ]
    return len(sizes) + 2, bad


def day(world: World, offset: int):
    """The calendar date `offset` days after the world's start."""
    return world.start.fromordinal(world.start.toordinal() + int(offset))
