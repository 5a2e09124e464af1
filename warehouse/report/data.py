"""What a dataset report shows, read from the catalog in one pass: every query runs once for all the chosen
datasets, through the confined read-only connection `cxr sql` uses, and is grouped per dataset here.

The derived tables (split_stats, demographics) are read as they are; the report's own queries live in
sql/report/*.sql. Nothing here samples: every figure is over all rows, which the page says.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import CxrError
from ..queries import named_query

REPORT_QUERIES = ("report_sections", "age_histogram", "view_mix", "label_prevalence", "cooccurrence", "split_images")
# catalog_datasets columns shown in a dataset's "About" block, when the catalog has them
ABOUT_COLUMNS = (
    "name",
    "version",
    "access",
    "licence",
    "licence_url",
    "homepage",
    "citation",
    "bibtex",
    "source_location",
    "last_ingest",
    "links_to",
    "notes",
)
AGREEMENT_VIEW = "label_agreement"


class ReportError(CxrError):
    """A report cannot be written as asked (no such dataset ingested, an unreadable cohort folder)."""


@dataclass
class DatasetData:
    """One dataset's rows of every report query, each a list of dicts."""

    dataset: str
    about: dict
    split_stats: list[dict] = field(default_factory=list)
    demographics: list[dict] = field(default_factory=list)
    agreement: list[dict] | None = None  # None: the catalog has no label_agreement view
    queries: dict[str, list[dict]] = field(default_factory=dict)


def load(warehouse, datasets: list[str] | None) -> list[DatasetData]:
    """The chosen datasets (default: every ingested one), with all their report rows."""
    con = warehouse.connect()
    try:

        def rows(sql: str, params=None) -> list[dict]:
            return warehouse.run(con, sql, params).to_arrow_table().to_pylist()

        catalog = rows("SELECT * FROM catalog_datasets ORDER BY dataset")
        ingested = [d["dataset"] for d in catalog if d.get("ingested")]
        chosen = list(datasets or ingested)
        missing = [d for d in chosen if d not in ingested]
        if missing:
            raise ReportError(
                f"not ingested: {', '.join(missing)} (ingested: {', '.join(ingested) or 'none'}); "
                f"run `cxr ingest -d {missing[0]}` first"
            )
        params = {"datasets": chosen}
        found = {
            d: DatasetData(d, {k: c.get(k) for k in ABOUT_COLUMNS if k in c})
            for c in catalog
            for d in [c["dataset"]]
            if d in chosen
        }
        for table in ("split_stats", "demographics"):
            for r in rows(f"SELECT * FROM {table} WHERE list_contains($datasets, dataset)", params):
                getattr(found[r["dataset"]], table).append(r)
        for name in REPORT_QUERIES:
            for d in found.values():
                d.queries[name] = []
            for r in rows(named_query("report", name).sql, params):
                found[r["dataset"]].queries[name].append(r)
        if has_view(warehouse, con, AGREEMENT_VIEW):
            agreement: dict[str, list[dict]] = {d: [] for d in found}
            for r in rows(f"SELECT * FROM {AGREEMENT_VIEW} WHERE list_contains($datasets, dataset)", params):
                agreement[r["dataset"]].append(r)
            for name, d in found.items():
                d.agreement = agreement[name]
    finally:
        con.close()
    return [found[d] for d in chosen]


def has_view(warehouse, con, name: str) -> bool:
    """Whether the catalog has this table or view (a derived table another release adds)."""
    return bool(
        warehouse.run(
            con, "SELECT count(*) FROM duckdb_views() WHERE view_name = $name AND NOT internal", {"name": name}
        ).fetchone()[0]
        or warehouse.run(
            con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = $name", {"name": name}
        ).fetchone()[0]
    )
