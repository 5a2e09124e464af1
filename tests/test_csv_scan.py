"""The CSV account's line scans: read in blocks and parsed once, they must number lines and slice raw
records exactly as reading the file line by line would.

Expected values come from splitting the whole file with bytes.split / str.splitlines here, not from
the reader. The block size is shrunk to a few bytes so that lines straddle block boundaries.
"""

from __future__ import annotations

import csv
import gzip
import io
import sqlite3

import pytest

from warehouse.sources import csvread
from warehouse.sources.base import SourceFolder

# CRLF, a bare CR inside a line, blank lines (also "\r"-only), a line with an unbalanced quote, no final newline
ONE_LINE = b'a,b\r\n1,x\r\n\r\n2,"y"\r\n\r\n3,p\rq\n4,"open\n\n5,z'
# quoted newlines of every kind, a bare CR between records, blank lines, a final record without a newline
MULTI_LINE = b'a,b\r\n1,"x\ny"\r\n\r\n2,z\r3,"p\r\nq\rr"\n\n4,w\n5,"tail"'


@pytest.fixture(params=[False, True], ids=["plain", "gzip"])
def folder(tmp_path, request):
    def write(name: str, data: bytes) -> tuple[SourceFolder, str]:
        name += ".gz" if request.param else ""
        (tmp_path / name).write_bytes(gzip.compress(data) if request.param else data)
        return SourceFolder(str(tmp_path)), name

    return write


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 20])
def test_one_line_scan_numbers_every_line_as_a_line_by_line_read(folder, monkeypatch, chunk):
    monkeypatch.setattr(csvread, "READ_CHUNK", chunk)
    src, name = folder("one.csv", ONE_LINE)
    physical = ONE_LINE.split(b"\n")  # line N is physical[N - 1]; the header is line 1
    expected_lines = [n for n, line in enumerate(physical, 1) if n > 1 and line.strip(b"\r")]
    expected_unbalanced = {
        n: line.decode().rstrip("\r") for n, line in enumerate(physical, 1) if n > 1 and line.count(b'"') % 2
    }
    lines, unbalanced = csvread._scan_lines(src, name)
    assert lines == expected_lines == [2, 4, 6, 7, 9]
    assert unbalanced == expected_unbalanced == {7: '4,"open'}
    assert [(n, csvread._text(line)) for n, line in csvread._data_lines(src, name)] == [
        (n, physical[n - 1].decode().rstrip("\r")) for n in expected_lines
    ]


def test_multi_line_records_are_parsed_once_and_their_raw_text_sliced_by_span(folder):
    src, name = folder("multi.csv", MULTI_LINE)
    text = MULTI_LINE.decode()
    # what the csv module sees as lines: split at \n, \r\n and a bare \r, endings kept
    text_lines = io.StringIO(text, newline="").readlines()
    records = list(csv.reader(io.StringIO(text, newline="")))[1:]
    spans = csvread._record_spans(src, name)
    assert len(spans) == sum(1 for r in records if r) == 5
    wanted = {n: spans[n - 1] for n in range(1, len(spans) + 1)}
    found = csvread._raw_records(src, name, wanted)
    for number, (first, last) in wanted.items():
        start, raw = found[number]
        assert start == first
        assert raw == "".join(text_lines[first - 1 : last]).rstrip("\r\n")
        assert next(csv.reader(io.StringIO(raw, newline=""))) == [r for r in records if r][number - 1]
    assert found[3][1] == '3,"p\r\nq\rr"'


def test_run_history_commits_without_fsync(tmp_path):
    """cxr ingest's Dagster instance writes its SQLite history with synchronous=OFF (0)."""
    from sqlalchemy import create_engine, text

    from pipelines.run_history import relax_sqlite_sync

    relax_sqlite_sync()
    engine = create_engine(f"sqlite:///{tmp_path / 'history.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 0
    engine.dispose()
    plain = sqlite3.connect(tmp_path / "other.db")  # connections SQLAlchemy does not open keep the default
    assert plain.execute("PRAGMA synchronous").fetchone()[0] == 2
    plain.close()
