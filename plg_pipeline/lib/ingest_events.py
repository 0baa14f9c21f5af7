"""Product events: one arrival day's files -> accepted events + quarantine, every row accounted for.

Speed comes from decompressing each file once (ISA-L, about 1.4x zlib) and Polars' native
readers over those bytes: `read_lines` and one `read_ndjson` per file. Python only looks at lines
Polars rejects (found by splitting the failing batch), at values that might not be JSON strings,
and at JSON that may hold PII. Small consecutive days go through together: every pass, and
Pandera's validation, has a fixed cost that a day of a few thousand lines would pay alone.
"""

from __future__ import annotations

import io
import json
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import polars as pl
from isal import isal_zlib

from plg_pipeline.lib.pii import JsonScrubber, hash_emails, hmac_hex, mask_emails, truncate_ip
from plg_pipeline.lib.schemas import (
    EVENT_TYPES,
    EVENTS_SCHEMA,
    UTC_TS,
    EventsValidated,
    Quarantine,
    parse_utc,
    quarantine_frame,
)

if TYPE_CHECKING:
    from plg_pipeline.lib.catalog import EventCatalog
    from plg_pipeline.lib.ingest import IngestConfig

# Top-level fields that must be JSON strings (or null), then the objects, then context's fields.
TEXT_FIELDS = (
    "messageId",
    "type",
    "action",
    "event",
    "name",
    "userId",
    "anonymousId",
    "previousId",
    "groupId",
    "timestamp",
    "receivedAt",
)
OBJECT_FIELDS = ("properties", "traits")
CONTEXT_FIELDS = ("groupId", "ip")
# Lenient schema: Polars renders numbers and nested objects in a String field as their JSON text.
READ_SCHEMA = {
    **dict.fromkeys(TEXT_FIELDS + OBJECT_FIELDS, pl.String()),
    "context": pl.Struct(dict.fromkeys(CONTEXT_FIELDS, pl.String())),
}
PROPERTY_SCHEMA = dict.fromkeys(
    (
        "feature",
        "tier",
        "plan",
        "required_plan",
        "limit",
        "metric",
        "used",
        "allowed",
        "quantity",
        "integration",
        "invitee_email",
        "invited_by",
        "trigger_id",
        "page",
        "role",
    ),
    pl.String(),
)
TRAIT_SCHEMA = dict.fromkeys(("email", "role", "plan", "consent"), pl.String())
PARSED_COLUMNS = (
    "source_file",
    "line",
    "raw",
    *TEXT_FIELDS,
    *OBJECT_FIELDS,
    *(f"context.{f}" for f in CONTEXT_FIELDS),
    "type_error",
)
# A lenient String value that may have been a JSON number, boolean, object or array.
NOT_A_STRING = r"^(?:-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false)$|^[\[{]"
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
SPLIT = 16
GZIP_CHUNK = 1 << 20
BATCH_BYTES = 4 << 20  # about 50k gzipped event lines
GROUP_BYTES = 4 << 20
"""Consecutive days are ingested together until their files hold this many bytes (a day of 10M
events holds 20 MB and goes alone). 1M events, 64 days, 3 interleaved runs: CPU 17.5-24.1 ->
13.4-14.9 s, wall 12.0-27.9 -> 8.8-11.1 s (the host stole 5-29% of the CPU), peak RSS 0.50 ->
0.75 GiB. Groups of 8 or 16 MB cost no less CPU and peaked at 1.1 and 1.6 GiB."""
READERS = 3  # batches of a day at once: a day of three 78k-line files 0.86 -> 0.81 s over 2
_DEDUP_SEED = 7
T = TypeVar("T")


@dataclass(frozen=True)
class DayIngest:
    events: pl.DataFrame
    quarantine: pl.DataFrame
    stats: dict[str, int]


def arrival_days(raw_dir: Path | str) -> list[date]:
    """The arrival days that have a `events/dt=YYYY-MM-DD` folder, in order."""
    days = []
    for folder in (Path(raw_dir) / "events").glob("dt=*"):
        try:
            day = date.fromisoformat(folder.name.removeprefix("dt="))
        except ValueError:
            continue
        if folder.is_dir():
            days.append(day)
    return sorted(days)


def drop_seen(day_events: pl.DataFrame, earlier_ids: pl.LazyFrame) -> tuple[pl.DataFrame, int]:
    """Drop events whose messageId already arrived on an earlier day (a late client retry)."""
    seen = earlier_ids.select("event_id").collect()["event_id"]
    ids = day_events["event_id"]
    # 64-bit hashes find the few candidates cheaply, by a semi join (a week of ids at 10M,
    # 1.4M against 250k: 0.14 s with is_in, 0.05 s); comparing their text makes it exact
    found = (
        ids.hash(seed=_DEDUP_SEED)
        .to_frame("h")
        .with_row_index("at")
        .join(seen.hash(seed=_DEDUP_SEED).to_frame("h"), on="h", how="semi")["at"]
    )
    if found.is_empty():
        return day_events, 0
    repeats = seen.filter(seen.is_in(ids.gather(found).implode()))
    maybe = pl.repeat(False, ids.len(), eager=True).scatter(found, True)
    kept = day_events.filter(~(maybe & ids.is_in(repeats.implode())))
    return kept, day_events.height - kept.height


# ---------------------------------------------------------------- decoding JSON text


class _RowCountMismatch(Exception):
    """read_ndjson saw a different number of lines (e.g. a bare CR inside a line)."""


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _read_ndjson(texts: pl.Series, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    buf = io.BytesIO()
    texts.to_frame().write_csv(buf, include_header=False, quote_style="never")
    frame = pl.read_ndjson(buf.getvalue(), schema=schema)
    if frame.height != texts.len():
        raise _RowCountMismatch(f"{frame.height} rows from {texts.len()} lines")
    return frame


def _decode(
    texts: pl.Series, schema: dict[str, pl.DataType], classify
) -> tuple[pl.DataFrame, pl.Series, dict[int, str]]:
    """Decode non-null JSON object texts; a failing batch is split until the bad rows are isolated.

    Returns the decoded rows, their positions in `texts` and a reason per rejected position.
    `classify(text)` gives (reason, compact_text): a reason for text Python rejects, else None and
    a one-line re-serialisation that Polars gets a last chance to read.
    """
    pieces: list[pl.DataFrame] = []
    kept: list[range] = []
    reasons: dict[int, str] = {}

    def run(lo: int, hi: int) -> None:
        try:
            pieces.append(_read_ndjson(texts.slice(lo, hi - lo), schema))
            kept.append(range(lo, hi))
            return
        except (pl.exceptions.PolarsError, _RowCountMismatch):
            pass
        if hi - lo > 1:
            step = -(-(hi - lo) // SPLIT)
            for start in range(lo, hi, step):
                run(start, min(hi, start + step))
            return
        reason, compact = classify(texts[lo])
        if reason is None:
            try:
                pieces.append(_read_ndjson(pl.Series([compact]), schema))
                kept.append(range(lo, hi))
                return
            except (pl.exceptions.PolarsError, _RowCountMismatch) as exc:
                reason = f"invalid_json:{_first_line(exc)}"
        reasons[lo] = reason

    if texts.len():
        run(0, texts.len())
    frame = pl.concat(pieces) if pieces else pl.DataFrame(schema=schema)
    positions = pl.Series([i for r in kept for i in r], dtype=pl.Int64)
    return frame, positions, reasons


def _on_distinct(values: pl.Series, compute) -> pl.DataFrame:
    """`compute(distinct values)` (a frame aligned with them), spread back to every row of `values`.

    For per-value work on columns that repeat a lot (a day holds a few thousand distinct property
    objects or IPs in a quarter of a million rows).
    """
    distinct = values.unique()
    out = compute(distinct).with_columns(distinct.alias("_key"))
    return (
        values.to_frame("_key")
        .join(out, on="_key", how="left", maintain_order="left", nulls_equal=True)
        .drop("_key")
    )


def _decode_column(
    texts: pl.Series, schema: dict[str, pl.DataType], field: str
) -> tuple[pl.DataFrame, pl.Series]:
    """Decode a column of JSON object texts: fields aligned with `texts`, and why a text is not one."""

    def decode(distinct: pl.Series) -> pl.DataFrame:
        frame, reason = _decode_texts(distinct, schema, field)
        return frame.with_columns(reason.alias("_reason"))

    out = _on_distinct(texts, decode)
    return out.drop("_reason"), out["_reason"]


def _decode_texts(
    texts: pl.Series, schema: dict[str, pl.DataType], field: str
) -> tuple[pl.DataFrame, pl.Series]:
    is_object = texts.str.strip_chars().str.starts_with("{").fill_null(False)
    if (is_object | texts.is_null()).all():
        # The usual case, every text an object whose fields fit the schema: one native pass.
        try:
            frame = texts.str.json_decode(pl.Struct(schema)).struct.unnest()
            return frame, pl.repeat(None, texts.len(), dtype=pl.String, eager=True)
        except pl.exceptions.PolarsError:
            pass
    at = is_object.arg_true().cast(pl.Int64)
    decoded, positions, failed = _decode(texts.gather(at), schema, _object_classifier(field))
    aligned = decoded.with_columns(_i=at.gather(positions))
    frame = (
        pl.int_range(0, texts.len(), eager=True, dtype=pl.Int64)
        .to_frame("_i")
        .join(aligned, on="_i", how="left", maintain_order="left")
        .drop("_i")
    )
    not_object = (texts.is_not_null() & ~is_object).to_frame("x")
    reason = not_object.select(pl.when("x").then(pl.lit(f"wrong_type:{field}"))).to_series()
    if failed:
        reason = reason.scatter(at.gather(list(failed)), pl.Series(list(failed.values())))
    return frame, reason


def _type_problem(obj: dict) -> str | None:
    for field in TEXT_FIELDS:
        if obj.get(field) is not None and not isinstance(obj[field], str):
            return f"wrong_type:{field}"
    for field in (*OBJECT_FIELDS, "context"):
        if obj.get(field) is not None and not isinstance(obj[field], dict):
            return f"wrong_type:{field}"
    context = obj.get("context") or {}
    for field in CONTEXT_FIELDS:
        if context.get(field) is not None and not isinstance(context[field], str):
            return f"wrong_type:context.{field}"
    return None


def _classify_line(text: str) -> tuple[str | None, str]:
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        return f"invalid_json:{_first_line(exc)}", text
    if not isinstance(obj, dict):
        return f"wrong_type:line is a JSON {type(obj).__name__}, not an object", text
    return _type_problem(obj), json.dumps(obj, separators=(",", ":"))


def _object_classifier(field: str):
    def classify(text: str) -> tuple[str | None, str]:
        try:
            obj = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            return f"invalid_json:{field}: {_first_line(exc)}", text
        if not isinstance(obj, dict):
            return f"wrong_type:{field}", text
        return None, json.dumps(obj, separators=(",", ":"))

    return classify


# ---------------------------------------------------------------- reading files


def _gunzip(data: bytes) -> bytes:
    """Every gzip member of `data`, each inflated in one call; EOFError for a cut stream.

    igzip.decompress reads in blocks and joins them: on a 20 MB file (111 MB of lines) 0.17 s
    and twice the page faults, against 0.11 s here. Damaged files go to `_gunzip_prefix`, which
    keeps their good part.
    """
    members: list[bytes] = []
    while data:
        inflater = isal_zlib.decompressobj(16 + isal_zlib.MAX_WBITS)
        members.append(inflater.decompress(data))
        if not inflater.eof:
            raise EOFError("gzip stream ends before its end marker")
        data = inflater.unused_data.lstrip(b"\x00")  # members may be padded with zeros
    return members[0] if len(members) == 1 else b"".join(members)


def _gunzip_prefix(data: bytes) -> tuple[bytes, str | None]:
    """Decompress every gzip member, keeping what decodes before a cut or corruption."""
    out: list[bytes] = []
    rest = data
    while rest.strip(b"\x00"):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pos = 0
        try:
            while pos < len(rest) and not inflater.eof:
                out.append(inflater.decompress(rest[pos : pos + GZIP_CHUNK]))
                pos += GZIP_CHUNK
        except zlib.error as exc:
            return b"".join(out), f"corrupt_gzip:{exc}"
        if not inflater.eof:
            out.append(inflater.flush())
            return b"".join(out), "truncated_gzip:stream ends before its end marker"
        rest = inflater.unused_data + rest[pos:]
    return b"".join(out), None


def _read_lines_slowly(path: Path) -> tuple[pl.Series, list[tuple[int, str, str]]]:
    """Byte-level reading for files Polars refuses (cut gzip, invalid UTF-8): keep every good line."""
    data = path.read_bytes()
    cut = None
    if data[:2] == b"\x1f\x8b":
        data, cut = _gunzip_prefix(data)
    pieces = data.split(b"\n")
    tail = pieces.pop()  # after the last newline: a cut line, or b"" for a complete file
    if tail and cut is None:
        pieces.append(tail)
    lines: list[str | None] = []
    problems: list[tuple[int, str, str]] = []
    for number, piece in enumerate(pieces, 1):
        piece = piece.removesuffix(b"\r")
        try:
            lines.append(piece.decode("utf-8"))
        except UnicodeDecodeError as exc:
            lines.append(None)
            problems.append(
                (
                    number,
                    f"invalid_utf8:{exc.reason} at byte {exc.start}",
                    piece.decode("utf-8", "replace"),
                )
            )
    if cut is not None:
        problems.append((len(pieces) + 1, cut, tail.decode("utf-8", "replace")))
    return pl.Series("raw", lines, dtype=pl.String), problems


def _problem_rows(rel: str, rows: list[tuple[int, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        [(rel, line, reason, raw) for line, reason, raw in rows],
        schema={"source_file": pl.String, "line": pl.Int64, "reason": pl.String, "raw": pl.String},
        orient="row",
    )


def _decode_lines(
    data: bytes | None, lines: pl.Series
) -> tuple[pl.DataFrame, pl.Series, dict[int, str]]:
    """Decode event lines; a file (`data`) whose every line is one object is first read whole."""
    if data is not None:
        try:
            frame = pl.read_ndjson(data, schema=READ_SCHEMA)
            if frame.height == lines.len():
                return frame, pl.int_range(0, frame.height, eager=True), {}
        except pl.exceptions.PolarsError:
            pass
    return _decode(lines, READ_SCHEMA, _classify_line)


def _suspect_text(field_col: str, key: str) -> pl.Expr:
    """True where a lenient String value may not have been a JSON string in the line."""
    value = pl.col(field_col)
    verbatim = pl.col("raw").str.contains(pl.lit(f'"{key}":"') + value + pl.lit('"'), literal=True)
    return (value.str.contains(NOT_A_STRING) & ~verbatim).fill_null(False)


def _object_lines(
    numbered: pl.DataFrame, simple: pl.Series, problems: list[tuple[int, str, str]]
) -> pl.DataFrame:
    """The lines that may hold one JSON object (padding allowed), in order; blank lines and
    lines that cannot be one object go to `problems`, the latter straight to the classifier,
    which saves failed batches."""
    raw = pl.col("raw")
    rest = numbered.filter(~simple & raw.is_not_null()).with_columns(stripped=raw.str.strip_chars())
    problems += [(n, "blank_line", r) for n, r, s in rest.iter_rows() if not s]
    padded = pl.col("stripped").str.starts_with("{") & pl.col("stripped").str.ends_with("}")
    malformed = rest.filter((pl.col("stripped") != "") & ~padded)
    problems += [
        (n, _classify_line(r)[0] or "invalid_json", r) for n, r, _ in malformed.iter_rows()
    ]
    candidates = numbered.filter(simple)
    if rest.filter(padded).height:
        candidates = pl.concat([candidates, rest.filter(padded).drop("stripped")]).sort("line")
    return candidates


def _read_json_file(path: Path, rel: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(parsed rows in PARSED_COLUMNS, rejected rows) of a JSON-lines file."""
    problems: list[tuple[int, str, str]] = []
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":  # once here, not again in each Polars reader
            data = _gunzip(data)
        lines = pl.read_lines(data, name="raw")["raw"]
    except (pl.exceptions.PolarsError, OSError, EOFError, isal_zlib.error):
        (lines, problems), data = _read_lines_slowly(path), None
    if lines.len() == 0 and not problems:
        return _empty_parsed(), _problem_rows(rel, [(0, "empty_file", "")])
    numbered = pl.DataFrame({"line": pl.int_range(1, lines.len() + 1, eager=True), "raw": lines})
    # Cheap shape test first; the few lines failing it get the exact (copying) one. Files whose
    # every line passes skip the row filters (about 35 ms for a 236k-line file).
    simple = (lines.str.starts_with("{") & lines.str.ends_with("}")).fill_null(False)
    candidates, whole = numbered, data
    if not simple.all():
        candidates, whole = _object_lines(numbered, simple, problems), None
    decoded, positions, reasons = _decode_lines(whole, candidates["raw"])
    problems += [(candidates["line"][i], r, candidates["raw"][i]) for i, r in reasons.items()]
    if positions.len() < candidates.height:  # positions ascend: equal length is every row
        candidates = candidates[positions]
    parsed = pl.concat(
        [candidates, decoded.unnest("context", separator=".")], how="horizontal"
    ).with_columns(source_file=pl.lit(rel), type_error=pl.lit(None, dtype=pl.String))
    # Lenient decoding turned numbers, booleans and objects into text: re-check those lines.
    checked = [(f, f) for f in TEXT_FIELDS] + [(f"context.{f}", f) for f in CONTEXT_FIELDS]
    maybe = pl.any_horizontal(pl.col(c).str.contains(NOT_A_STRING) for c, _ in checked)
    flagged = parsed.with_row_index("_i").filter(maybe.fill_null(False))
    flagged = flagged.filter(pl.any_horizontal(_suspect_text(c, key) for c, key in checked))
    if flagged.height:
        found = [_classify_line(r)[0] for r in flagged["raw"].to_list()]
        parsed = parsed.with_columns(
            type_error=pl.Series([None] * parsed.height, dtype=pl.String).scatter(
                flagged["_i"], pl.Series(found, dtype=pl.String)
            )
        )
    return parsed.select(PARSED_COLUMNS), _problem_rows(rel, problems)


def _parquet_text(
    frame: pl.DataFrame, field: str, objects: bool = False
) -> tuple[pl.Expr, pl.Expr]:
    """(value as text, wrong-type flag) for one field of a Parquet file, whatever its dtype."""
    if field not in frame.columns:
        return pl.lit(None, dtype=pl.String), pl.lit(False)
    col, dtype = pl.col(field), frame.schema[field]
    if dtype == pl.String:
        return col, pl.lit(False)
    if dtype == pl.Null:
        return col.cast(pl.String), pl.lit(False)
    if objects and isinstance(dtype, pl.Struct):
        return pl.when(col.is_not_null()).then(col.struct.json_encode()), pl.lit(False)
    if not objects and isinstance(dtype, pl.Datetime):
        utc = col.dt.replace_time_zone("UTC") if dtype.time_zone is None else col
        return utc.dt.convert_time_zone("UTC").dt.to_string("%Y-%m-%dT%H:%M:%S%.6f+00:00"), pl.lit(
            False
        )
    return pl.lit(None, dtype=pl.String), col.is_not_null()


def _read_parquet_file(path: Path, rel: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    try:
        frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        return _empty_parsed(), _problem_rows(rel, [(0, f"unreadable_file:{_first_line(exc)}", "")])
    if frame.height == 0:
        return _empty_parsed(), _problem_rows(rel, [(0, "empty_file", "")])
    raw = frame.select(pl.struct(pl.all()).struct.json_encode()).to_series()
    columns, wrong = {}, []
    for field in TEXT_FIELDS + OBJECT_FIELDS:
        columns[field], bad = _parquet_text(frame, field, objects=field in OBJECT_FIELDS)
        wrong.append(pl.when(bad).then(pl.lit(f"wrong_type:{field}")))
    if isinstance(frame.schema.get("context"), pl.Struct):
        inner = frame.select(pl.col("context").struct.unnest())
        frame = frame.hstack(inner.select(pl.all().name.prefix("context.")))
        for field in (f"context.{f}" for f in CONTEXT_FIELDS):
            columns[field], bad = _parquet_text(frame, field)
            wrong.append(pl.when(bad).then(pl.lit(f"wrong_type:{field}")))
    else:
        # A JSON string (or absent): decoded like a line's context object.
        texts, bad = _parquet_text(frame, "context", objects=True)
        texts = frame.with_columns(_ctx=pl.when(~bad).then(texts))["_ctx"]
        ctx, ctx_reason = _decode_column(texts, READ_SCHEMA["context"].to_schema(), "context")
        for field in CONTEXT_FIELDS:
            columns[f"context.{field}"] = pl.lit(ctx[field])
        wrong.append(pl.when(bad).then(pl.lit("wrong_type:context")).otherwise(pl.lit(ctx_reason)))
    parsed = frame.select(
        pl.lit(rel).alias("source_file"),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("line"),
        raw.alias("raw"),
        *(expr.alias(name) for name, expr in columns.items()),
        pl.coalesce(wrong).alias("type_error"),
    )
    return parsed.select(PARSED_COLUMNS), _problem_rows(rel, [])


def _empty_parsed() -> pl.DataFrame:
    schema = dict.fromkeys(PARSED_COLUMNS, pl.String())
    schema["line"] = pl.Int64()
    schema["arrival_date"] = pl.Date()
    return pl.DataFrame(schema=schema)


def _read_file(path: Path, rel: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(JSON_SUFFIXES):
        return _read_json_file(path, rel)
    if name.endswith(".parquet"):
        return _read_parquet_file(path, rel)
    return _empty_parsed(), _problem_rows(rel, [(0, f"unsupported_file:{path.name}", "")])


# ---------------------------------------------------------------- validation and curation


def _blank_to_null(name: str) -> pl.Expr:
    col = pl.col(name)
    return pl.when(col.str.contains(r"\S")).then(col)


def _reasons(days: Iterable[date], config: IngestConfig) -> pl.Expr:
    """The first contract rule each parsed row breaks (null when it passes): one stable code.

    `days` are the rows' arrival dates: a timestamp is in the future after its own day's end.
    """
    ends = {
        day: datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)
        + timedelta(hours=config.future_tolerance_hours)
        for day in days
    }
    arrival, keys = pl.col("arrival_date"), pl.Series(list(ends), dtype=pl.Date)
    latest = arrival.replace_strict(keys, list(ends.values()), return_dtype=UTC_TS)
    future = arrival.replace_strict(
        keys, [f"future_timestamp:after {end.isoformat()}" for end in ends.values()]
    )
    kind, ts = pl.col("type"), pl.col("timestamp")
    return (
        pl.when(pl.col("type_error").is_not_null())
        .then(pl.col("type_error"))
        .when(kind.is_null())
        .then(pl.lit("missing_type"))
        .when(~kind.is_in(EVENT_TYPES))
        .then(pl.lit("unknown_type:") + kind.str.slice(0, 60))
        .when(pl.col("messageId").is_null())
        .then(pl.lit("missing_message_id"))
        .when(ts.is_null())
        .then(pl.lit("missing_timestamp"))
        .when(pl.col("event_time").is_null())
        .then(pl.lit("unparseable_timestamp:") + ts.str.slice(0, 60))
        .when(pl.col("event_time") > latest)
        .then(future)
        .when(pl.col("userId").is_null() & pl.col("anonymousId").is_null())
        .then(pl.lit("missing_user_and_anonymous_id"))
        .when((kind == "track") & pl.col("event").is_null())
        .then(pl.lit("track_without_event"))
        .when((kind == "alias") & pl.col("previousId").is_null())
        .then(pl.lit("missing_previous_id"))
        .when((kind == "group") & pl.col("groupId").is_null())
        .then(pl.lit("missing_group_id"))
    )


def _validate(parsed: pl.DataFrame, days: Iterable[date], config: IngestConfig) -> pl.DataFrame:
    """Normalise the parsed rows and attach `reason`; objects are decoded here (props, traits)."""
    frame = parsed.with_columns(
        *(_blank_to_null(f).alias(f) for f in TEXT_FIELDS if f not in ("type", "action")),
        # Segment's older payloads name the call `action` instead of `type`.
        type=pl.coalesce(_blank_to_null("type"), _blank_to_null("action")),
        event_time=parse_utc(pl.col("timestamp")),
        received_at=parse_utc(pl.col("receivedAt")),
    )
    props, props_reason = _decode_column(frame["properties"], PROPERTY_SCHEMA, "properties")
    traits, traits_reason = _decode_column(frame["traits"], TRAIT_SCHEMA, "traits")
    frame = frame.with_columns(
        type_error=pl.coalesce(
            "type_error",
            pl.lit(props_reason),
            pl.lit(traits_reason),
        )
    )
    return pl.concat(
        [
            frame,
            props.select(pl.all().name.prefix("p.")),
            traits.select(pl.all().name.prefix("t.")),
        ],
        how="horizontal",
    ).with_columns(reason=_reasons(days, config))


def _erased(frame: pl.DataFrame, hash_key: str, erased_id_hashes: frozenset[str]) -> pl.Series:
    """Rows of people who asked for erasure: re-reading an old raw file must not bring them back."""
    if not erased_id_hashes or frame.height == 0:
        return pl.repeat(False, frame.height, eager=True)
    wanted = pl.Series(list(erased_id_hashes), dtype=pl.String).implode()
    hits = [
        hmac_hex(frame[c], hash_key).is_in(wanted).fill_null(False)
        for c in ("userId", "anonymousId", "previousId")
    ]
    return hits[0] | hits[1] | hits[2]


def _curate(frame: pl.DataFrame, catalog: EventCatalog, hash_key: str) -> pl.DataFrame:
    """Accepted rows -> the events_validated columns, with PII hashed, dropped or truncated."""
    scrubber = JsonScrubber(hash_key, catalog.email_keys, catalog.drop_keys)
    kind = pl.col("type")
    consent = pl.col("t.consent").str.json_path_match("$.analytics")
    out = frame.select(
        pl.col("messageId").alias("event_id"),
        kind,
        pl.when(kind == "track")
        .then(pl.col("event"))
        .when(kind.is_in(["page", "screen"]))
        .then(pl.col("name"))
        .alias("event_name"),
        pl.col("userId").alias("user_id"),
        pl.col("anonymousId").alias("anonymous_id"),
        pl.col("previousId").alias("previous_id"),
        pl.col("groupId").alias("group_id"),
        _blank_to_null("context.groupId").alias("context_group_id"),
        pl.when(kind == "group")
        .then(pl.col("groupId"))
        .otherwise(_blank_to_null("context.groupId"))
        .alias("account_id"),
        "event_time",
        pl.col("event_time").dt.date().alias("event_date"),
        "received_at",
        "arrival_date",
        "source_file",
        "line",
        *(
            pl.lit(_on_distinct(frame[c], lambda d: scrubber.scrub(d).to_frame()).to_series())
            for c in ("properties", "traits")
        ),
        pl.lit(
            _on_distinct(
                frame["context.ip"], lambda d: d.to_frame().select(truncate_ip(pl.col(d.name)))
            )
            .to_series()
            .alias("context_ip")
        ),
        hash_emails(pl.col("t.email"), hash_key).alias("email_hash"),
        pl.coalesce("t.role", "p.role").alias("role"),
        pl.when(consent == "true")
        .then(True)
        .when(consent == "false")
        .then(False)
        .alias("consent_analytics"),
        pl.coalesce("p.plan", "t.plan").alias("plan"),
        pl.col("p.feature").alias("feature"),
        pl.col("p.tier").alias("tier"),
        pl.col("p.required_plan").alias("required_plan"),
        pl.coalesce("p.limit", "p.metric").alias("limit_name"),
        *(
            pl.col(f"p.{c}").cast(pl.Float64, strict=False).alias(c)
            for c in ("used", "allowed", "quantity")
        ),
        pl.col("p.integration").alias("integration"),
        hash_emails(pl.col("p.invitee_email"), hash_key).alias("invitee_hash"),
        mask_emails(pl.col("p.invited_by"), hash_key).alias("invited_by"),
        pl.col("p.trigger_id").alias("trigger_id"),
        pl.col("p.page").alias("page"),
    )
    return out.cast(EVENTS_SCHEMA)


@dataclass(frozen=True)
class _FileIngest:
    events: pl.DataFrame  # curated, before the day's duplicates are dropped
    quarantine: pl.DataFrame  # source_file, line, reason, raw, arrival_date
    rows_in: Counter[date]
    erased: Counter[date]


def _day_files(raw_dir: Path, dt: date) -> list[Path]:
    folder = raw_dir / "events" / f"dt={dt.isoformat()}"
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))


def _runs(
    items: Iterable[T], size: Callable[[T], int], min_bytes: int, apart=lambda run, item: False
) -> Iterator[list[T]]:
    """Consecutive items, each run closed once it holds `min_bytes` (or before an item that
    `apart(run, item)` keeps out of it): large items go one by one, small ones together, since
    each pass over a run has a fixed cost."""
    run: list[T] = []
    held = 0
    for item in items:
        if run and (held >= min_bytes or apart(run, item)):
            yield run
            run, held = [], 0
        run.append(item)
        held += size(item)
    if run:
        yield run


def _day_groups(
    raw_dir: Path, days: Iterable[date], min_bytes: int
) -> Iterator[list[tuple[date, list[Path]]]]:
    """Consecutive days with their files, in runs of `min_bytes`: a day's files never split,
    nor does a day appear twice in a run."""
    return _runs(
        ((day, _day_files(raw_dir, day)) for day in days),
        lambda item: sum(path.stat().st_size for path in item[1]),
        min_bytes,
        apart=lambda run, item: item[0] in {day for day, _ in run},
    )


def _ingest_files(
    files: list[tuple[Path, date]],
    raw_dir: Path,
    catalog: EventCatalog,
    hash_key: str,
    config: IngestConfig,
    erased_id_hashes: frozenset[str],
) -> _FileIngest:
    """Files (with their arrival days) read, validated and curated: every step is per row or
    per distinct value, so files are independent until a day's duplicates are dropped."""
    oks, bads, rows_in = [], [], Counter[date]()
    for path, day in files:
        ok, bad = _read_file(path, path.relative_to(raw_dir).as_posix())
        rows_in[day] += ok.height + bad.height
        oks.append(ok.with_columns(arrival_date=pl.lit(day, dtype=pl.Date)))
        bads.append(bad.with_columns(arrival_date=pl.lit(day, dtype=pl.Date)))
    parsed = pl.concat([_empty_parsed(), *oks])
    rejected = pl.concat(bads)
    rows = _validate(parsed, rows_in.keys(), config)
    erased = _erased(rows, hash_key, erased_id_hashes)
    kept = rows.filter(~erased)
    # Columns _curate does not read are dropped before the row filters copy them.
    accepted = kept.filter(pl.col("reason").is_null()).drop(
        "raw", "action", "timestamp", "receivedAt", "type_error", "reason"
    )
    failed = kept.filter(pl.col("reason").is_not_null()).select(rejected.columns)
    return _FileIngest(
        events=_curate(accepted, catalog, hash_key),
        quarantine=pl.concat([rejected, failed]),
        rows_in=rows_in,
        erased=Counter(rows["arrival_date"].filter(erased).to_list()),
    )


def _by_day(frame: pl.DataFrame, days: list[date]) -> dict[date, pl.DataFrame]:
    parts = frame.partition_by("arrival_date", as_dict=True, maintain_order=True)
    return {day: parts.get((day,), frame.clear()) for day in days}


def _counts(frame: pl.DataFrame) -> Counter[date]:
    """Rows per arrival date, counted on that column alone: grouping the whole frame (a concat
    of batches, so in chunks) first rechunks every column (10M, 143-154k-row days: 34-37 ->
    0.3 ms)."""
    return Counter(dict(frame["arrival_date"].value_counts().iter_rows()))


def _ingest_days(
    raw_dir: Path,
    group: list[tuple[date, list[Path]]],
    *,
    catalog: EventCatalog,
    hash_key: str,
    config: IngestConfig,
    erased_id_hashes: frozenset[str],
) -> list[tuple[date, DayIngest]]:
    """`ingest_arrival_day` of each day of `group`, their files read, validated and checked
    together: at 1M events (days of 16k lines), Pandera alone took 25% of ingestion's time
    when it ran day by day, most of it a fixed cost per call."""
    days = [day for day, _ in group]

    def one(batch: list[tuple[Path, date]]) -> _FileIngest:
        return _ingest_files(batch, raw_dir, catalog, hash_key, config, erased_id_hashes)

    files = [(path, day) for day, paths in group for path in paths]
    # Batches go through in parallel: the work is in Polars, which releases the GIL.
    with ThreadPoolExecutor(max_workers=READERS) as pool:
        batches = _runs(files, lambda file: file[0].stat().st_size, BATCH_BYTES)
        done = list(pool.map(one, batches))
    curated = pl.concat([f.events for f in done]) if done else pl.DataFrame(schema=EVENTS_SCHEMA)
    # A retry within the day: the first copy in file and line order stays. On a struct, which
    # Polars row-encodes: 250k ids 61 -> 28 ms against the string column's own.
    events = curated.filter(pl.struct("arrival_date", "event_id").is_first_distinct())
    quarantine = quarantine_frame(
        pl.concat(
            [_problem_rows("", []).with_columns(arrival_date=pl.lit(None, pl.Date))]
            + [f.quarantine for f in done]
        ).sort("arrival_date", "source_file", "line"),
        source="events",
    )
    events, quarantine = EventsValidated.validate(events), Quarantine.validate(quarantine)
    found = _counts(curated)
    day_events, day_quarantine = _by_day(events, days), _by_day(quarantine, days)
    rows_in = sum((f.rows_in for f in done), Counter[date]())
    erased = sum((f.erased for f in done), Counter[date]())
    return [
        (
            day,
            DayIngest(
                day_events[day],
                day_quarantine[day],
                {
                    "files": len(paths),
                    "rows_in": rows_in[day],
                    "accepted": day_events[day].height,
                    "quarantined": day_quarantine[day].height,
                    "duplicates_in_day": found[day] - day_events[day].height,
                    "erased": erased[day],
                },
            ),
        )
        for day, paths in group
    ]


def ingest_arrival_day(
    raw_dir: Path | str,
    dt: date,
    *,
    catalog: EventCatalog,
    hash_key: str,
    config: IngestConfig,
    erased_id_hashes: frozenset[str] = frozenset(),
) -> DayIngest:
    """Read every file of `events/dt=<dt>/` and split its rows into events and quarantine.

    rows_in == accepted + quarantined + duplicates_in_day + erased, always.
    """
    raw_dir = Path(raw_dir)
    ((_, day),) = _ingest_days(
        raw_dir,
        [(dt, _day_files(raw_dir, dt))],
        catalog=catalog,
        hash_key=hash_key,
        config=config,
        erased_id_hashes=erased_id_hashes,
    )
    return day


def ingest_arrival_days(
    raw_dir: Path | str,
    days: Iterable[date],
    *,
    catalog: EventCatalog,
    hash_key: str,
    config: IngestConfig,
    erased_id_hashes: frozenset[str] = frozenset(),
    workers: int = 2,
    group_bytes: int = GROUP_BYTES,
) -> Iterator[tuple[date, DayIngest]]:
    """`ingest_arrival_day` for each day, yielded in the order of `days` as (day, DayIngest).

    Consecutive days go through in groups of at least `group_bytes` of files (a large day
    alone). Up to `workers` groups run at once in threads (Polars releases the GIL), so one
    group's Python steps overlap another's native work; at most `workers` groups of results
    wait for the caller. A child process taking groups beside this one, its frames returned in
    Arrow IPC files, was slower (10M, 12 days: 11.5-13.1 s against 10.4-11.7; 1M: 8.4-9.8
    against 8.3-9.3): on those 12 days two threads took no more CPU than one (17.2 against
    18.4 s), so a process could only win the time Polars leaves a core idle; at 1M reading the
    files back took 0.7-0.9 s.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    raw_dir = Path(raw_dir)
    todo = _day_groups(raw_dir, days, group_bytes)
    running: deque[Future[list[tuple[date, DayIngest]]]] = deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:

        def start_next() -> None:
            group = next(todo, None)
            if group is not None:
                running.append(
                    pool.submit(
                        _ingest_days,
                        raw_dir,
                        group,
                        catalog=catalog,
                        hash_key=hash_key,
                        config=config,
                        erased_id_hashes=erased_id_hashes,
                    )
                )

        for _ in range(workers):
            start_next()
        while running:
            results = running.popleft().result()
            start_next()
            yield from results
