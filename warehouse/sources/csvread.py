"""Read a dataset's CSV exactly as published: checked header, typed columns, rejected rows kept.

DuckDB's CSV reader does the parsing: it is fast, reads gzip and fsspec URLs, and with
store_rejects it records every row it cannot read (too few or too many fields, a value that does
not convert) with its physical line, column and raw text. Those rows become quarantine rows
instead of aborting the ingest or vanishing. Column names come from us, not the header, because
some headers cannot be split correctly (NIH's `OriginalImage[Width,Height]`).
"""
from __future__ import annotations

import csv
import gzip
import io
import zlib
from dataclasses import dataclass

import duckdb
import polars as pl

from .base import SourceError, SourceFolder
from .quarantine import QUARANTINE_COLUMNS, empty_quarantine


@dataclass
class CsvRead:
    frame: pl.DataFrame          # accepted rows, with `_row` (1-based data record number)
    rejects: pl.DataFrame        # quarantine rows
    header: str


def first_line(src: SourceFolder, name: str) -> str:
    """The header line of a (possibly gzipped) text file, without reading the whole file."""
    with src.open(name) as raw:
        stream = gzip.GzipFile(fileobj=raw) if name.endswith(".gz") else raw
        try:
            line = stream.readline(1 << 20)
        except (OSError, EOFError, zlib.error) as e:
            raise SourceError(src.display(name), f"cannot be read ({e})") from None
    text = line.decode("utf-8-sig").rstrip("\r\n")
    if not text:
        raise SourceError(src.display(name), "is empty (no header line)", line=1)
    return text


def duckdb_url(src: SourceFolder, name: str, con: duckdb.DuckDBPyConnection) -> str:
    """The path DuckDB should open; remote filesystems are registered with the connection."""
    path = src.path(name)
    protocol = src.fs.protocol if isinstance(src.fs.protocol, str) else src.fs.protocol[0]
    if protocol in ("file", "local"):
        return path
    if not con.filesystem_is_registered(src.fs.protocol if isinstance(src.fs.protocol, str) else protocol):
        con.register_filesystem(src.fs)
    return src.fs.unstrip_protocol(path)


def read_csv(src: SourceFolder, name: str, *, columns: dict[str, str], header: str | tuple[str, ...] | None,
             target_table: str, one_line_records: bool = True) -> CsvRead:
    """Read `name` with the given column names and DuckDB types.

    `header` is the exact header line (or lines) the dataset publishes; anything else is a
    SourceError naming the file and what was found. `one_line_records` says the format never
    puts a newline inside a field, so data record N sits on physical line N + 1.
    """
    found = first_line(src, name)
    accepted = (header,) if isinstance(header, str) else header
    if accepted is not None and found not in accepted:
        expected = "\n  ".join(accepted)
        raise SourceError(src.display(name), f"unexpected header.\n  found:    {found}\n  expected: {expected}",
                          line=1)
    con = duckdb.connect()
    try:
        url = duckdb_url(src, name, con)
        options = {
            "header": False, "skip": 1, "auto_detect": False, "delim": ",", "quote": '"', "escape": '"',
            "columns": columns, "store_rejects": True, "strict_mode": True, "null_padding": False,
        }
        sql = f"SELECT * FROM read_csv(?, {', '.join(f'{k} := {_sql_literal(v)}' for k, v in options.items())})"
        try:
            table = con.sql(sql, params=[url]).to_arrow_table()
        except duckdb.Error as e:
            raise SourceError(src.display(name), f"could not be read as CSV: {e}") from None
        rejects = con.sql(
            "SELECT line, column_name, error_type, csv_line, error_message FROM reject_errors ORDER BY line"
        ).pl()
    finally:
        con.close()
    frame = pl.from_arrow(table)
    frame = frame.with_columns(_record_numbers(frame.height, rejects, one_line_records))
    return CsvRead(frame, _quarantine_from_rejects(rejects, src.display(name), target_table, columns,
                                                   one_line_records), found)


def _sql_literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_sql_literal(k)}: {_sql_literal(v)}" for k, v in value.items()) + "}"
    return "'" + str(value).replace("'", "''") + "'"


def _record_numbers(n_rows: int, rejects: pl.DataFrame, one_line_records: bool) -> pl.Series:
    """1-based data record number of each accepted row, skipping the records DuckDB rejected."""
    if rejects.is_empty() or not one_line_records:
        return pl.int_range(1, n_rows + 1, eager=True, dtype=pl.Int64).alias("_row")
    rejected_records = set((rejects["line"] - 1).to_list())
    numbers, record = [], 0
    for _ in range(n_rows):
        record += 1
        while record in rejected_records:
            record += 1
        numbers.append(record)
    return pl.Series("_row", numbers, dtype=pl.Int64)


def _quarantine_from_rejects(rejects: pl.DataFrame, file: str, target_table: str, columns: dict[str, str],
                             one_line_records: bool) -> pl.DataFrame:
    if rejects.is_empty():
        return empty_quarantine()
    names = list(columns)
    rows = []
    shape_errors = ("MISSING COLUMNS", "TOO MANY COLUMNS")
    reported_lines: set[int] = set()
    # One DuckDB reject per error. A row of the wrong width is one quarantine row for the whole
    # row; a row with several unconvertible values yields one quarantine row per value.
    for line, column, error_type, raw, message in rejects.iter_rows():
        whole_row = error_type in shape_errors
        if whole_row and line in reported_lines:
            continue
        value = None
        if column and column in names and not whole_row:
            fields = next(csv.reader(io.StringIO(raw)), [])
            idx = names.index(column)
            value = fields[idx] if idx < len(fields) else None
        if whole_row:
            reported_lines.add(line)
        rows.append({
            "target_table": target_table, "source_file": file,
            "row_number": int(line) - 1 if one_line_records else None, "line_number": int(line),
            "column_name": "" if whole_row else (column or ""), "value": value,
            "reason": f"{error_type.lower()}: {message}", "raw_record": raw,
        })
    return pl.DataFrame(rows, schema=QUARANTINE_COLUMNS)


def read_lines(src: SourceFolder, name: str) -> list[str]:
    """Non-empty stripped lines of a small text file (split lists like test_list.txt)."""
    return [line.strip() for line in src.read_bytes(name).decode("utf-8-sig").splitlines() if line.strip()]
