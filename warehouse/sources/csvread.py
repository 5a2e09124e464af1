"""Read a dataset's CSV exactly as published: checked header, typed columns, rejected rows kept.

DuckDB's CSV reader does the parsing: it is fast, reads gzip and fsspec URLs, and with
store_rejects it records every row it cannot read (too few or too many fields, a value that does
not convert) with its physical line, column and raw text. Those rows become quarantine rows
instead of aborting the ingest or vanishing. Column names come from us, not the header, because
some headers cannot be split correctly (NIH's `OriginalImage[Width,Height]`).

DuckDB lets a quoted field run across newlines, so one stray `"` once swallowed every record up to
the next quote (68,000 CheXpert rows) while the ingest succeeded. So every read keeps an account:
records in = rows kept + records rejected, or a SourceError. Records are counted outside DuckDB:
- one-record-per-line formats (`one_line_records`): each non-blank physical line after the header is a
  record. A line whose quotes do not balance is quarantined whole (reason `unbalanced quote`, its
  column and raw line) and DuckDB reads the file without it, so it cannot absorb its neighbours.
- formats whose quoted fields may hold newlines: Python's csv module (strict) counts the records and
  notes the physical line each starts on. If it cannot parse the file, or the counts differ, the read
  is a SourceError naming the file and line: with multi-line records nobody can tell where a record
  with a stray quote ends. DuckDB numbers such a file's records, not its lines (record N is its
  "line" N + 1), so rejects and `_row` are record numbers and quarantine rows get the physical line.
"""

from __future__ import annotations

import csv
import gzip
import io
import shutil
import zlib
from contextlib import contextmanager
from dataclasses import dataclass

import duckdb
import polars as pl

from ..scratch import scratch_dir
from .base import SourceError, SourceFolder
from .quarantine import QUARANTINE_COLUMNS, empty_quarantine, quarantine_rows

READ_CHUNK = 8 << 20  # bytes of decompressed text split into lines at a time


@dataclass
class CsvRead:
    frame: pl.DataFrame  # accepted rows, with `_row` (1-based data record number)
    rejects: pl.DataFrame  # quarantine rows
    header: str
    records: int = 0  # data records in the file (the account: kept + rejected)
    src: SourceFolder | None = None
    name: str = ""
    one_line_records: bool = True
    spans: list[tuple[int, int]] | None = None  # multi-line formats: (first, last) text line of each record

    def with_raw(self, rows: pl.DataFrame) -> pl.DataFrame:
        """`rows` (a slice of `frame`) with `_raw`, the record as written in the file.

        For multi-line formats also `_line`, the physical line the record starts on (quarantine_rows
        uses it), since there record N is not on line N + 1.
        """
        wanted = set(rows["_row"].to_list())
        assert self.src is not None, "a CsvRead made by read_csv knows its source"
        if not self.one_line_records:
            assert self.spans is not None, "read_csv records the line span of each multi-line record"
            found = _raw_records(self.src, self.name, {n: self.spans[n - 1] for n in wanted}) if wanted else {}
            return rows.with_columns(
                pl.col("_row")
                .replace_strict({n: raw for n, (_, raw) in found.items()}, default=None, return_dtype=pl.String)
                .alias("_raw"),
                pl.col("_row")
                .replace_strict({n: line for n, (line, _) in found.items()}, default=None, return_dtype=pl.Int64)
                .alias("_line"),
            )
        raw: dict[int, str] = {}
        if wanted:
            for line_no, line in _data_lines(self.src, self.name):
                if line_no - 1 in wanted:
                    raw[line_no - 1] = _text(line)
        return rows.with_columns(pl.col("_row").replace_strict(raw, default=None, return_dtype=pl.String).alias("_raw"))


class Rejects:
    """Bad rows of one CsvRead gathered by an adapter, made into quarantine rows at the end.

    Each bad frame is a slice of `read.frame` (it has `_row`). The raw records of all of them are
    fetched in one pass over the file (CsvRead.with_raw), not one pass per kind of problem. A
    `_reason` column in a bad frame overrides `reason` per row.
    """

    def __init__(self, read: CsvRead, where: str):
        self.read, self.where = read, where
        self.pending: list[tuple[pl.DataFrame, str, str, str]] = []

    def add(self, bad: pl.DataFrame, *, table: str, column: str, reason: str = "") -> None:
        if not bad.is_empty():
            self.pending.append((bad, table, column, reason))

    def frames(self) -> list[pl.DataFrame]:
        if not self.pending:
            return []
        wanted = pl.concat([bad.select("_row") for bad, *_ in self.pending]).unique().sort("_row")
        raw = self.read.with_raw(wanted)
        out = []
        for bad, table, column, reason in self.pending:
            bad = bad.drop("_raw", "_line", strict=False).join(raw, on="_row", how="left", maintain_order="left")
            rows = quarantine_rows(
                bad,
                target_table=table,
                source_file=self.where,
                column=column,
                reason=reason,
                one_line_rows=self.read.one_line_records,
            )
            out.append(rows.with_columns(bad["_reason"].alias("reason")) if "_reason" in bad.columns else rows)
        return out


@contextmanager
def _binary(src: SourceFolder, name: str):
    with src.open(name) as raw:
        yield gzip.GzipFile(fileobj=raw) if name.endswith(".gz") else raw


def _text(line: bytes) -> str:
    return line.decode("utf-8", errors="replace").rstrip("\r\n")


def _data_lines(src: SourceFolder, name: str):
    """(physical line number, bytes) of every non-blank line after the header."""
    for first, lines in _line_blocks(src, name):
        for line_no, line in enumerate(lines, first):
            if line.strip(b"\r"):
                yield line_no, line


def _line_blocks(src: SourceFolder, name: str):
    """(number of the first line, lines without their b"\n") of the lines after the header, block by block.

    Lines end at b"\n" (a bare b"\r" stays inside a line), as when iterating the binary stream; the file
    is read in large chunks and split here, because iterating a GzipFile costs a Python call per line.
    """
    line_no = 1
    with _binary(src, name) as stream:
        try:
            stream.readline()
            rest = b""
            while chunk := stream.read(READ_CHUNK):
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                yield line_no + 1, lines
                line_no += len(lines)
            if rest:
                yield line_no + 1, [rest]
        except (OSError, EOFError, zlib.error) as e:
            raise SourceError(
                src.display(name), f"cannot be read after line {line_no} ({e})", line=line_no + 1
            ) from None


def first_line(src: SourceFolder, name: str) -> str:
    """The header line of a (possibly gzipped) text file, without reading the whole file."""
    with _binary(src, name) as stream:
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


def read_csv(
    src: SourceFolder,
    name: str,
    *,
    columns: dict[str, str],
    header: str | tuple[str, ...] | None,
    target_table: str,
    one_line_records: bool = True,
    require_rows: bool = False,
) -> CsvRead:
    """Read `name` with the given column names and DuckDB types.

    `header` is the exact header line (or lines) the dataset publishes; anything else is a
    SourceError naming the file and what was found. `one_line_records` says the format never
    puts a newline inside a field, so data record N sits on physical line N + 1. `require_rows`
    makes a file with a header and no records a SourceError instead of an empty dataset.
    """
    found = first_line(src, name)
    accepted = (header,) if isinstance(header, str) else header
    if accepted is not None and found not in accepted:
        expected = "\n  ".join(accepted)
        raise SourceError(src.display(name), f"unexpected header.\n  found:    {found}\n  expected: {expected}", line=1)
    display = src.display(name)
    if one_line_records:
        lines, unbalanced = _scan_lines(src, name)
        records = len(lines)
    else:
        unbalanced = {}
        spans = _record_spans(src, name)
        lines = [first for first, _ in spans]  # physical start line of each record
        records = len(lines)
    tmp = scratch_dir("csv")
    try:
        con = duckdb.connect()
        try:
            url = _without_lines(src, name, unbalanced, str(tmp)) if unbalanced else duckdb_url(src, name, con)
            table, rejects = _duckdb_read(con, url, columns, display)
        finally:
            con.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if unbalanced:  # DuckDB read the file without those lines: map its line numbers back
        rejects = rejects.with_columns(
            pl.col("line").map_elements(lambda n: _original_line(n, sorted(unbalanced)), return_dtype=pl.Int64)
        )
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame), "a table, not one column"
    rejected = set(rejects["line"].to_list()) | set(unbalanced)
    if one_line_records:
        kept = pl.Series("_row", [n - 1 for n in lines if n not in rejected], dtype=pl.Int64)
    else:  # DuckDB's "line" of record N is N + 1 here
        kept = pl.Series("_row", [n for n in range(1, records + 1) if n + 1 not in rejected], dtype=pl.Int64)
    if kept.len() != frame.height:
        raise SourceError(
            display,
            f"{records} data records, but {frame.height} were read and {len(rejected)} "
            "rejected; a quote may be unbalanced, so records may have merged",
        )
    frame = frame.with_columns(kept)
    quarantine = pl.concat(
        [
            _quarantine_from_rejects(rejects, display, target_table, columns, None if one_line_records else lines),
            _unbalanced_rows(unbalanced, display, target_table, list(columns)),
        ]
    )
    if require_rows and not records:
        raise SourceError(display, "has a header but no data rows")
    return CsvRead(frame, quarantine, found, records, src, name, one_line_records, None if one_line_records else spans)


def _duckdb_read(con: duckdb.DuckDBPyConnection, url: str, columns: dict[str, str], display: str):
    options = {
        "header": False,
        "skip": 1,
        "auto_detect": False,
        "delim": ",",
        "quote": '"',
        "escape": '"',
        "columns": columns,
        "store_rejects": True,
        "strict_mode": True,
        "null_padding": False,
    }
    sql = f"SELECT * FROM read_csv(?, {', '.join(f'{k} := {_sql_literal(v)}' for k, v in options.items())})"
    try:
        table = con.sql(sql, params=[url]).to_arrow_table()
    except duckdb.Error as e:
        raise SourceError(display, f"could not be read as CSV: {e}") from None
    rejects = (
        con.sql("SELECT line, column_name, error_type, csv_line, error_message FROM reject_errors ORDER BY line")
        .pl()
        .with_columns(pl.col("line").cast(pl.Int64))
    )
    return table, rejects


def _scan_lines(src: SourceFolder, name: str) -> tuple[list[int], dict[int, str]]:
    """Line numbers of the data records of a one-line format, and the lines whose quotes do not balance."""
    lines: list[int] = []
    unbalanced: dict[int, str] = {}
    for first, block in _line_blocks(src, name):
        lines += [n for n, line in enumerate(block, first) if line.strip(b"\r")]
        unbalanced.update((n, _text(line)) for n, line in enumerate(block, first) if line.count(b'"') % 2)
    return lines, unbalanced


def _text_lines(stream):
    """The text lines of a CSV file as the csv module sees them (split at \\n, \\r\\n or a bare \\r, kept)."""
    return io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")


def _record_spans(src: SourceFolder, name: str) -> list[tuple[int, int]]:
    """(first, last) text line of each data record, read by a strict RFC-4180 reader.

    Blank lines are not records; their count is the file's record count. The csv module reads no
    further than the record it returns, so the lines it pulled since the last record are that record.
    The parse happens once; the raw text of a record is later sliced from its span (_raw_records).
    """
    with _binary(src, name) as stream:
        reader = csv.reader(_text_lines(stream), strict=True)
        spans = []
        try:
            next(reader, None)
            end = reader.line_num
            for record in reader:
                if record:
                    spans.append((end + 1, reader.line_num))
                end = reader.line_num
        except csv.Error as e:
            raise SourceError(
                src.display(name), f"is not valid CSV ({e}); a quote may be unbalanced", line=reader.line_num
            ) from None
        except (OSError, EOFError, zlib.error) as e:
            raise SourceError(src.display(name), f"cannot be read ({e})", line=reader.line_num + 1) from None
    return spans


def _raw_records(src: SourceFolder, name: str, wanted: dict[int, tuple[int, int]]) -> dict[int, tuple[int, str]]:
    """Record number -> (start line, raw text) for the `wanted` data records (number -> line span).

    The raw text is the record's lines exactly as written (undecodable bytes replaced), without the
    final line end; one pass over the lines, no second CSV parse.
    """
    by_first = {first: (number, last) for number, (first, last) in wanted.items()}
    found: dict[int, tuple[int, str]] = {}
    last_needed = max(last for _, last in wanted.values())
    with _binary(src, name) as stream:
        open_record: tuple[int, int, list[str]] | None = None
        for line_no, line in enumerate(_text_lines(stream), 1):
            if open_record is None and line_no in by_first:
                number, last = by_first[line_no]
                open_record = (number, last, [])
            if open_record is not None:
                number, last, pulled = open_record
                pulled.append(line)
                if line_no == last:
                    found[number] = (line_no - len(pulled) + 1, "".join(pulled).rstrip("\r\n"))
                    open_record = None
            if line_no >= last_needed:
                break
    return found


def _without_lines(src: SourceFolder, name: str, skip: dict[int, str], folder: str) -> str:
    """A local copy of the file without the `skip` lines, for DuckDB to read."""
    path = f"{folder}/{name.removesuffix('.gz')}"
    with _binary(src, name) as stream, open(path, "wb") as out:
        for line_no, line in enumerate(stream, 1):
            if line_no not in skip:
                out.write(line)
    return path


def _original_line(line: int, skipped: list[int]) -> int:
    for gap in skipped:
        line += gap <= line
    return line


def _unbalanced_rows(unbalanced: dict[int, str], file: str, target_table: str, names: list[str]) -> pl.DataFrame:
    rows = []
    for line_no, raw in unbalanced.items():
        column = _open_quote_field(raw)
        rows.append(
            {
                "target_table": target_table,
                "source_file": file,
                "row_number": line_no - 1,
                "line_number": line_no,
                "column_name": names[column] if column < len(names) else "",
                "value": None,
                "raw_record": raw,
                "reason": "unbalanced quote: a '\"' opened in this field is not closed on its line; "
                "the line is quarantined whole so that it cannot absorb the records after it",
            }
        )
    return pl.DataFrame(rows, schema=QUARANTINE_COLUMNS)


def _open_quote_field(line: str) -> int:
    """Index of the field in which the last unclosed quote of `line` opens."""
    field, inside, opened = 0, False, 0
    for char in line:
        if char == '"':
            inside = not inside
            opened = field if inside else opened
        elif char == "," and not inside:
            field += 1
    return opened


def _sql_literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_sql_literal(k)}: {_sql_literal(v)}" for k, v in value.items()) + "}"
    return "'" + str(value).replace("'", "''") + "'"


def _quarantine_from_rejects(
    rejects: pl.DataFrame, file: str, target_table: str, columns: dict[str, str], record_lines: list[int] | None
) -> pl.DataFrame:
    """Quarantine rows of DuckDB's rejects; `record_lines` (multi-line formats) maps record N to its line."""
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
        record = int(line) - 1
        physical = (
            int(line) if record_lines is None or not 0 < record <= len(record_lines) else record_lines[record - 1]
        )
        rows.append(
            {
                "target_table": target_table,
                "source_file": file,
                "row_number": record,
                "line_number": physical,
                "column_name": "" if whole_row else (column or ""),
                "value": value,
                "reason": f"{error_type.lower()}: {message}",
                "raw_record": raw,
            }
        )
    return pl.DataFrame(rows, schema=QUARANTINE_COLUMNS)


def read_lines(src: SourceFolder, name: str) -> list[str]:
    """Non-empty stripped lines of a small text file (split lists like test_list.txt)."""
    return [line.strip() for line in src.read_bytes(name).decode("utf-8-sig").splitlines() if line.strip()]
