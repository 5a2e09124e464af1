"""`cxr report`: dataset and cohort reports as one self-contained HTML page, plus Markdown and CSV of every
table in it.

data.py reads the catalog, cohort.py a cohort folder, tables.py and charts.py turn the rows into tables and
SVG charts, page.py writes the HTML, files.py the Markdown and CSV. build.py puts them in order.
Importing this package is cheap (`cxr stats --labels` uses its tables); Altair loads only for a report.
"""

from __future__ import annotations


def write_report(warehouse, out, datasets=None, cohorts=()):
    """report.html, report.md and tables/*.csv in `out` (see build.write_report)."""
    from .build import write_report as write

    return write(warehouse, out, datasets, cohorts)
