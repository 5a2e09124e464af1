"""Turn an adapter's polars frame into a canonical Arrow table: exact columns, types and order.

This is where the schema contract is enforced for the adapter's *shape* (a missing required
column or an extra column is an adapter bug and raises). Whether the *values* honour the
contract (vocabularies, ranges, uniqueness) is the quality checks' job, so values pass through
unchanged and a bad one fails a check instead of disappearing here.
"""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl
import pyarrow as pa

from .errors import CxrError
from .schema import ATTRIBUTES, Table
from .schema import table as table_def


class ConformError(CxrError, ValueError):
    """An adapter produced a frame that does not fit its canonical table."""


_POLARS_TYPES = {
    pa.string(): pl.String,
    pa.float64(): pl.Float64,
    pa.float32(): pl.Float32,
    pa.int64(): pl.Int64,
    pa.int32(): pl.Int32,
    pa.int16(): pl.Int16,
    pa.int8(): pl.Int8,
    pa.bool_(): pl.Boolean,
    pa.date32(): pl.Date,
    pa.list_(pa.string()): pl.List(pl.String),
    # polars has no map type: a map is a list of {key, value} structs until it becomes Arrow (to_arrow_map)
    ATTRIBUTES: pl.List(pl.Struct({"key": pl.String, "value": pl.String})),
}
_ENTRY = pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())]))


def polars_type(arrow_type: pa.DataType):
    return _POLARS_TYPES[arrow_type]


def conform(
    table_name: str, frame: pl.DataFrame, dataset: str, *, sort: bool = True, origin: str | None = None
) -> pa.Table:
    """Canonical Arrow table for `table_name`, with `dataset` filled in and (by default) rows in key order.

    `origin` is the dataset the image files come from (the linked one, for a dataset that links to
    another); it makes images.image_uid, so adapters never spell the cross-dataset identity.
    """
    spec = table_def(table_name)
    return _arrow(_canonical_frame(spec, frame, dataset, sort=sort, origin=origin), spec)


def conform_slices(
    table_name: str, frame: pl.DataFrame, dataset: str, *, rows: int, origin: str | None = None
) -> Iterator[pa.Table]:
    """The same rows as `conform`, in key order, as Arrow tables of `rows` rows each.

    Converting to Arrow copies the rows (strings twice: polars' views to large strings, then to the
    schema's strings), so a whole table converted at once was held three times over while it was written.
    Slice by slice, only the sorted frame is whole.
    """
    spec = table_def(table_name)
    ordered = _canonical_frame(spec, frame, dataset, sort=True, origin=origin)
    del frame
    for offset in range(0, ordered.height, rows):
        yield _arrow(ordered.slice(offset, rows), spec)


def _canonical_frame(spec: Table, frame: pl.DataFrame, dataset: str, *, sort: bool, origin: str | None) -> pl.DataFrame:
    present = set(frame.columns)
    extra = {c for c in present if not c.startswith("_")} - set(spec.column_names)
    if extra:
        raise ConformError(f"{dataset}: adapter gave {spec.name} columns the schema does not have: {sorted(extra)}")
    columns = []
    for column in spec.columns:
        target = polars_type(column.type)
        if column.name == "dataset":
            columns.append(pl.lit(dataset, pl.String).alias("dataset"))
        elif column.name == "image_uid" and "image_uid" not in present:
            columns.append((pl.lit(f"{origin or dataset}:") + pl.col("image_id").cast(pl.String)).alias("image_uid"))
        elif column.name in present:
            columns.append(pl.col(column.name).cast(target, strict=True))
        elif column.default is not None:
            columns.append(pl.lit(column.default, target).alias(column.name))
        elif column.nullable:
            columns.append(pl.lit(None, target).alias(column.name))
        else:
            raise ConformError(f"{dataset}: adapter gave {spec.name} without required column {column.name!r}")
    try:
        out = frame.select(columns)
    except pl.exceptions.PolarsError as e:
        raise ConformError(f"{dataset}: {spec.name} does not fit its schema: {e}") from None
    return out.sort(list(spec.order), nulls_last=True, maintain_order=True) if sort else out


def _arrow(frame: pl.DataFrame, spec: Table) -> pa.Table:
    arrow = frame.to_arrow(compat_level=pl.CompatLevel.oldest())
    for i, column in enumerate(spec.columns):
        if column.type == ATTRIBUTES:
            arrow = arrow.set_column(i, column.name, to_arrow_map(arrow.column(i)))
    return arrow.cast(spec.schema)


def to_arrow_map(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A list of {key, value} structs (polars' shape of a map) as an Arrow MAP<string, string>."""
    if column.type == ATTRIBUTES:
        return column
    column = column.cast(_ENTRY)
    chunks = [
        pa.MapArray.from_arrays(
            chunk.offsets,
            chunk.values.field("key"),
            chunk.values.field("value"),
            mask=chunk.is_null() if chunk.null_count else None,
        )
        for chunk in column.chunks
    ]
    return pa.chunked_array(chunks, ATTRIBUTES)


def empty(table: Table | str) -> pa.Table:
    spec = table_def(table) if isinstance(table, str) else table
    return spec.schema.empty_table()
