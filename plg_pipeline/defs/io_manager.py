"""One storage rule for every asset: the frame goes to the lake, and `marts/*` also to the warehouse.

Keeping this in an IO manager means assets only compute frames; where and how they are stored
(atomic Parquet, one-transaction publish, partition replacement) is decided once, here.
"""

from datetime import date

import dagster as dg
import polars as pl

from plg_pipeline.defs.resources import PipelineSettings
from plg_pipeline.lib import lake, warehouse

PARTITION_COLUMN = "arrival_date"


def frame_metadata(frame: pl.DataFrame, preview_rows: int = 10) -> dict[str, dg.MetadataValue]:
    """Row count, column schema and a Markdown preview: what a person checks first in the UI."""
    with pl.Config(
        tbl_formatting="MARKDOWN",
        tbl_hide_column_data_types=True,
        tbl_hide_dataframe_shape=True,
        tbl_rows=preview_rows,
        tbl_cols=14,
        fmt_str_lengths=48,
    ):
        preview = str(frame.head(preview_rows))
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()]
    )
    return {
        "dagster/row_count": dg.MetadataValue.int(frame.height),
        "dagster/column_schema": dg.MetadataValue.table_schema(schema),
        "preview": dg.MetadataValue.md(preview),
    }


def _collect(obj: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    return obj.collect() if isinstance(obj, pl.LazyFrame) else obj


class LakehouseIOManager(dg.ConfigurableIOManager):
    """Assets keyed `lake/<name>` live in the lake only; `marts/<name>` are also published."""

    settings: PipelineSettings

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        if obj is None:
            return
        layer, name = context.asset_key.path[0], context.asset_key.path[-1]
        if context.has_asset_partitions:
            keys = context.asset_partition_keys
            frames = obj if isinstance(obj, dict) else {keys[0]: obj}
            collected = {key: _collect(frames[key]) for key in keys}
            for key, frame in collected.items():
                lake.write_parquet(frame, lake.partition_path(self.settings.lake, name, key))
            if layer == "marts":
                with self.settings.warehouse() as con:  # one open for the whole range
                    for key, frame in collected.items():
                        where = (PARTITION_COLUMN, date.fromisoformat(key))
                        warehouse.publish(con, name, frame, replace_where=where)
            total = sum(frame.height for frame in collected.values())
            context.add_output_metadata(
                {
                    **frame_metadata(collected[keys[-1]]),
                    "dagster/row_count": dg.MetadataValue.int(total),
                }
            )
            return
        if isinstance(obj, lake.DateRows):
            self._store_dates(context, layer == "marts", name, obj)
            return
        frame = _collect(obj)
        lake.write_parquet(frame, lake.table_path(self.settings.lake, name))
        if layer == "marts":
            with self.settings.warehouse() as con:
                warehouse.publish(con, name, frame)
        context.add_output_metadata(frame_metadata(frame))

    def _store_dates(
        self, context: dg.OutputContext, publish: bool, name: str, rows: lake.DateRows
    ) -> None:
        """A table stored one file per date: only the dates in the rows' span are replaced, in
        the lake and in the warehouse (whole when the warehouse has no copy yet)."""
        written = lake.write_dates(self.settings.lake, name, rows)
        stored = lake.scan_dates(self.settings.lake, name)
        if publish:
            with self.settings.warehouse() as con:
                if rows.span is None or not warehouse.table_exists(con, name):
                    warehouse.publish(con, name, stored.collect())
                else:
                    between = (rows.date_col, *rows.span)
                    warehouse.publish(con, name, rows.frame, replace_between=between)
        replaced = "every date" if rows.span is None else f"{rows.span[0]} to {rows.span[1]}"
        if rows.span == lake.EMPTY_SPAN:
            replaced = "none"
        context.add_output_metadata(
            {
                **frame_metadata(rows.frame),
                "dagster/row_count": dg.MetadataValue.int(stored.select(pl.len()).collect().item()),
                "rows_written": dg.MetadataValue.int(rows.frame.height),
                "dates_replaced": replaced,
                "date_files_written": dg.MetadataValue.int(len(written)),
            }
        )

    def load_input(self, context: dg.InputContext) -> pl.LazyFrame:
        name = context.asset_key.path[-1]
        if context.has_asset_partitions:
            files = lake.partition_files(self.settings.lake, name, context.asset_partition_keys)
            return pl.scan_parquet(files) if files else pl.LazyFrame()
        if lake.schema_path(self.settings.lake, name).exists():
            return lake.scan_dates(self.settings.lake, name)
        path = lake.table_path(self.settings.lake, name)
        if not path.exists():
            raise FileNotFoundError(
                f"{context.asset_key.to_user_string()} has not been materialized: {path} is missing"
            )
        return pl.scan_parquet(path)
