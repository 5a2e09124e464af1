"""Query results written as CSV, JSON or Parquet, by the project and never by user SQL.

The user's SQL runs on the confined connection, which cannot write files. Its result arrives
here as an Arrow stream and is written by DuckDB's own writers on a private in-memory connection
that holds nothing but that stream: the same code for stdout and for `--out`, so both spell every
value the same way, at DuckDB's speed rather than a Python loop's.

Spelling, for programs: a missing value is an empty CSV field and JSON `null`; booleans are
`true`/`false`; lists, structs and maps are JSON in a CSV cell and nested JSON in JSON; bytes are
lower-case hex; NaN and infinities are `nan`/`inf` in CSV and `null` in JSON, which has no
spelling for them; dates and times are ISO 8601 (`2020-01-02 03:04:05`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa

FORMATS = ("csv", "json", "parquet")
STDOUT = "/dev/stdout"


def export(reader: pa.RecordBatchReader, fmt: str, target: Path | str | None = None) -> int:
    """Write the stream to `target` (stdout when None) in `fmt`; the number of rows written."""
    import duckdb

    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt == "parquet":
        if target is None:
            raise ValueError("parquet needs a file")
        return _parquet(reader, Path(target))
    con = duckdb.connect()
    try:
        con.register("result", reader)
        select = f"SELECT {', '.join(_column(f, fmt) for f in reader.schema) or '*'} FROM result"
        options = "FORMAT csv, HEADER true" if fmt == "csv" else "FORMAT json, ARRAY true"
        if target is None:
            sys.stdout.flush()
            return _to_stream(con, select, options, sys.stdout.buffer)
        return _copy(con, f"COPY ({select}) TO '{_quote(str(target))}' ({options})")
    finally:
        con.close()


def _to_stream(con, select: str, options: str, out: BinaryIO) -> int:
    """Straight into the process's stdout when it is a real file descriptor, else via a scratch file."""
    out.flush()
    if _has_descriptor(out) and Path(STDOUT).exists():
        return _copy(con, f"COPY ({select}) TO '{STDOUT}' ({options})")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cxr-export-") as scratch:  # an in-process capture, say
        path = Path(scratch) / "out"
        rows = _copy(con, f"COPY ({select}) TO '{_quote(str(path))}' ({options})")
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                out.write(chunk)
        out.flush()
        return rows


def _copy(con, copy_sql: str) -> int:
    """Run a COPY statement; the number of rows it wrote (its one result row)."""
    result = con.execute(copy_sql).fetchone()
    assert result is not None, "COPY always returns its row count"
    return result[0]


def _has_descriptor(out) -> bool:
    try:
        out.fileno()
        return True
    except (AttributeError, OSError, ValueError):
        return False


def _column(field: pa.Field, fmt: str) -> str:
    """The SQL that spells one column for the format (see the module docstring)."""
    name = '"' + field.name.replace('"', '""') + '"'
    kind = field.type
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
        return f"lower(hex({name})) AS {name}"
    if pa.types.is_floating(kind) and fmt == "json":
        return f"CASE WHEN isfinite({name}) THEN {name} END AS {name}"
    if _nested(kind):
        finite = _finite_floats(name, kind) if fmt == "json" else name
        return f"to_json({finite}){'::VARCHAR' if fmt == 'csv' else ''} AS {name}"
    if pa.types.is_timestamp(kind) or pa.types.is_time(kind) or pa.types.is_date(kind):
        return f"CAST({name} AS VARCHAR) AS {name}"
    return name


def _nested(kind: pa.DataType) -> bool:
    return (
        pa.types.is_list(kind)
        or pa.types.is_large_list(kind)
        or pa.types.is_fixed_size_list(kind)
        or pa.types.is_struct(kind)
        or pa.types.is_map(kind)
    )


def _finite_floats(name: str, kind: pa.DataType) -> str:
    """A list of floats with NaN and infinities as null (DuckDB's to_json would write NaN)."""
    if (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and pa.types.is_floating(kind.value_type):
        return f"list_transform({name}, lambda v: CASE WHEN isfinite(v) THEN v END)"
    return name


def _parquet(reader: pa.RecordBatchReader, target: Path) -> int:
    import pyarrow.parquet as pq

    rows = 0
    with pq.ParquetWriter(target, reader.schema, compression="zstd") as writer:
        for batch in reader:
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


def _quote(text: str) -> str:
    return text.replace("'", "''")
