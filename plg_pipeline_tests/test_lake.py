"""Date-partitioned lake tables: an update replaces exactly the dates of its span."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from plg_pipeline.lib import lake

D = [date(2026, 3, d) for d in range(1, 6)]


def rows(pairs: list[tuple[str, date]]) -> pl.DataFrame:
    return pl.DataFrame(pairs, schema={"k": pl.String, "date": pl.Date}, orient="row")


def test_an_update_replaces_its_span_and_removes_emptied_dates(tmp_path):
    whole = rows([("a", D[0]), ("b", D[1]), ("c", D[2]), ("d", D[3])])
    assert lake.write_dates(tmp_path, "t", lake.DateRows(whole, "date")) == D[:4]
    before = lake.partition_path(tmp_path, "t", D[0]).stat().st_mtime_ns
    # D[1] loses its rows and D[2] changes; D[0] and D[3] lie outside the span
    update = lake.DateRows(rows([("c2", D[2])]), "date", (D[1], D[2]))
    assert lake.write_dates(tmp_path, "t", update) == [D[2]]
    assert lake.partition_dates(tmp_path, "t") == [D[0], D[2], D[3]]
    stored = lake.scan_dates(tmp_path, "t").collect().sort("k")
    assert stored.equals(update.apply(whole).sort("k"))
    assert stored["k"].to_list() == ["a", "c2", "d"]
    assert lake.partition_path(tmp_path, "t", D[0]).stat().st_mtime_ns == before
    # a new date comes in beside the stored ones
    lake.write_dates(tmp_path, "t", lake.DateRows(rows([("e", D[4])]), "date", (D[4], D[4])))
    assert lake.partition_dates(tmp_path, "t") == [D[0], D[2], D[3], D[4]]
    assert lake.scan_dates(tmp_path, "t", D[1], D[1]).collect().is_empty()  # columns kept
    # an empty span changes nothing; a full build drops every date it does not hold
    unchanged = lake.DateRows(rows([]), "date", lake.EMPTY_SPAN)
    assert lake.write_dates(tmp_path, "t", unchanged) == []
    assert lake.partition_dates(tmp_path, "t") == [D[0], D[2], D[3], D[4]]
    lake.write_dates(tmp_path, "t", lake.DateRows(rows([("z", D[3])]), "date"))
    assert lake.partition_dates(tmp_path, "t") == [D[3]]


def test_rows_outside_the_span_or_without_a_date_are_refused(tmp_path):
    with pytest.raises(ValueError, match="outside the span"):
        lake.write_dates(tmp_path, "t", lake.DateRows(rows([("a", D[4])]), "date", (D[0], D[1])))
    with pytest.raises(ValueError, match="without date"):
        lake.write_dates(tmp_path, "t", lake.DateRows(rows([("a", None)]), "date"))
    with pytest.raises(FileNotFoundError, match="has not been written"):
        lake.scan_dates(tmp_path, "t")
