"""`cxr`: the command line.

Commands import what they need when they run, so `cxr sql` starts fast: the query path touches
DuckDB and the catalog file, never Dagster or Great Expectations.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_USAGE, EXIT_FAILED = 2, 1


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    unknown = _unknown_datasets(args)
    if unknown:
        from .sources import DATASETS

        print(
            f"cxr {args.command}: unknown dataset {', '.join(map(repr, unknown))}; known: {', '.join(DATASETS)}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        return args.handler(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if _is_user_error(e):
            print(f"cxr {args.command}: {e}", file=sys.stderr)
            return EXIT_FAILED
        raise


def _is_user_error(e: Exception) -> bool:
    """The project's own errors, DuckDB's (a user's SQL) and missing files: one line, no traceback."""
    import duckdb

    from .errors import CxrError

    return isinstance(e, (CxrError, duckdb.Error, FileNotFoundError))


def _unknown_datasets(args) -> list[str]:
    """Dataset ids given with -d that no adapter knows (`samples` checks its own, smaller set)."""
    from .sources import DATASETS

    if args.command == "samples":
        return []
    return [d for d in getattr(args, "dataset", None) or [] if d not in DATASETS]


def _parser() -> argparse.ArgumentParser:
    from . import __version__
    from .schema import SCHEMA_VERSION

    parser = argparse.ArgumentParser(prog="cxr", description="Chest X-ray dataset warehouse and query catalog.")
    parser.add_argument("--version", action="version", version=f"cxr-warehouse {__version__} (schema {SCHEMA_VERSION})")
    sub = parser.add_subparsers(dest="command", metavar="command")

    p = sub.add_parser("fetch-public", help="download and verify the public metadata (torchxrayvision wheel)")
    p.set_defaults(handler=_fetch_public)

    p = sub.add_parser("samples", help="write format-faithful sample files of the credentialed datasets")
    p.add_argument(
        "--dataset",
        "-d",
        action="append",
        metavar="ID",
        help="mimic_cxr, mimic_qba, rexgradient or chexpert_plus (repeatable; default: all)",
    )
    p.add_argument("--patients", type=int, help="patients per dataset (default: each dataset's default size)")
    p.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    p.add_argument("--out", type=Path, required=True, help="folder to write <out>/<dataset>/ into")
    p.set_defaults(handler=_samples)

    p = sub.add_parser("ingest", help="ingest datasets into the warehouse and rebuild the catalog")
    p.add_argument("--dataset", "-d", action="append", metavar="ID", help="dataset id (repeatable; default: all)")
    p.add_argument(
        "--allow-shrink",
        action="store_true",
        help="publish even when a table loses more than 20%% of its rows against the last publish",
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="worker processes the dataset runs go to, side by side when more than one (default: 2 on two or "
        "more cores)",
    )
    p.set_defaults(handler=_ingest)

    p = sub.add_parser("sql", help="run a SQL query against the catalog")
    p.add_argument("query", help="SQL text, or @file.sql to read it from a file")
    p.add_argument("--format", "-f", choices=("table", "csv", "json", "parquet"), default="table")
    p.add_argument("--out", "-o", type=Path, help="write the result to this file instead of stdout")
    p.add_argument("--max-rows", type=int, default=40, help="rows shown in table format (default 40)")
    p.add_argument(
        "--as-of",
        metavar="VERSION|TIME",
        help="answer as the warehouse was at a past version (an integer, see catalog_meta) or time "
        "(ISO, e.g. 2026-12-01T10:00:00Z)",
    )
    p.set_defaults(handler=_sql)

    p = sub.add_parser("cohort", help="cohorts as files in sql/cohorts/: list, show, run into a manifest, verify a run")
    cohort = p.add_subparsers(dest="cohort_command", metavar="list|show|run|verify")
    c = cohort.add_parser("list", help="the cohorts in sql/cohorts/")
    c.set_defaults(handler=_cohort_list)
    c = cohort.add_parser("show", help="a cohort's header, parameters and rules")
    c.add_argument("name", help="a cohort name or a .sql file")
    c.set_defaults(handler=_cohort_show)
    c = cohort.add_parser(
        "run", help="write the manifest, attrition.csv, table1.csv/.md, croissant.json and cohort.json into --out"
    )
    c.add_argument("name", help="a cohort name (sql/cohorts/NAME.sql) or a .sql file")
    c.add_argument("--param", "-p", action="append", default=[], metavar="K=V", help="a parameter (repeatable)")
    c.add_argument("--out", "-o", type=Path, required=True, help="folder to write the outputs into")
    c.add_argument(
        "--format",
        "-f",
        choices=("parquet", "csv", "jsonl"),
        default="parquet",
        help="manifest format (default parquet)",
    )
    c.add_argument(
        "--finding",
        action="append",
        metavar="FINDING",
        help="pivot this finding into a manifest column (repeatable; adds to the header's findings)",
    )
    c.add_argument(
        "--uncertain",
        choices=("ignore", "zeros", "ones"),
        help="uncertain labels: ignore (-1 -> NULL), zeros (-1 -> 0), ones (-1 -> 1); default the header's",
    )
    c.add_argument(
        "--split",
        default="official",
        help="official (the sources' splits) or patient:TRAIN,VALID,TEST (hash of patient id and --seed)",
    )
    c.add_argument("--seed", type=int, default=0, help="seed of patient-level splits (default 0)")
    c.add_argument("--allow-leakage", action="store_true", help="let a patient be in more than one split")
    c.set_defaults(handler=_cohort_run)
    c = cohort.add_parser("verify", help="re-run a cohort at its recorded versions (identical?) and on today's data")
    c.add_argument("dir", type=Path, help="the --out folder of a `cxr cohort run` (holds cohort.json)")
    c.set_defaults(handler=_cohort_verify)

    p = sub.add_parser("stats", help="split statistics per dataset: studies, images, patients, report tokens")
    p.add_argument("--dataset", "-d", action="append", metavar="ID", help="only these datasets")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument(
        "--demographics",
        action="store_true",
        help="Table 2 instead: age, sex, race and ethnicity per split, in percent with their base",
    )
    shown.add_argument("--labels", action="store_true", help="label prevalence per finding, labeler and split instead")
    p.set_defaults(handler=_stats)

    p = sub.add_parser("report", help="a self-contained HTML report (plus Markdown and CSV) of datasets or cohorts")
    p.add_argument("--out", "-o", type=Path, required=True, help="folder to write report.html, report.md, tables/")
    p.add_argument(
        "--dataset",
        "-d",
        action="append",
        metavar="ID",
        help="only these datasets (repeatable; default: every ingested one, or none with --cohort)",
    )
    p.add_argument(
        "--cohort",
        "-c",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="a folder written by `cxr cohort run … --out DIR` (repeatable)",
    )
    p.set_defaults(handler=_report)

    p = sub.add_parser(
        "catalog",
        help="list datasets, tables, row counts and column docs; `catalog rebuild`, "
        "`catalog docs --out DIR`, `catalog search TERM`",
    )
    p.add_argument(
        "table",
        nargs="?",
        help="show the columns of this table; `rebuild` rebuilds the catalog from the "
        "warehouse root; `docs` writes the data dictionary into --out; "
        "`search TERM` finds tables, columns, findings, raw labels, datasets, "
        "queries and cohorts",
    )
    p.add_argument("term", nargs="?", help="with `search`: what to look for (case-insensitive)")
    p.add_argument("--columns", action="store_true", help="show the columns of every table")
    p.add_argument("--out", "-o", type=Path, help="with `docs`: the folder to write index.html and the Markdown into")
    p.add_argument("--limit", type=int, default=40, help="with `search`: matches shown (default 40)")
    p.set_defaults(handler=_catalog)
    return parser


def _warehouse():
    from .api import Warehouse

    return Warehouse()


# --- fetch-public --------------------------------------------------------------------------
def _fetch_public(args) -> int:
    from .config import Settings
    from .fetch import fetch_public

    data = fetch_public(Settings.load().cache, say=lambda m: print(m, file=sys.stderr))
    state = "fetched" if data.fetched_now else "already cached"
    print(f"Public metadata {state} in {data.root}")
    for folder in sorted(p for p in data.root.iterdir() if p.is_dir() and not p.name.startswith("_")):
        print(f"  {folder.name:<10} " + ", ".join(sorted(f.name for f in folder.iterdir())))
    return 0


# --- samples -------------------------------------------------------------------------------
def _samples(args) -> int:
    import json
    import time

    from .config import Settings
    from .samples import defaults

    chosen = args.dataset or defaults.generated_datasets()
    unknown = sorted(set(chosen) - set(defaults.generated_datasets()))
    if unknown:
        print(
            f"cxr samples: no generator for {', '.join(unknown)}; choose from "
            f"{', '.join(defaults.generated_datasets())}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if "mimic_qba" in chosen and "mimic_cxr" not in chosen:
        chosen = ["mimic_cxr", *chosen]  # QBA is derived from MIMIC-CXR: its split file lives there
    cache = Settings.load().cache
    for dataset in chosen:
        patients = args.patients or defaults.DEFAULT_PATIENTS[dataset]
        out = args.out / dataset
        out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        truth = defaults.write(
            dataset, out, patients=patients, seed=args.seed, cache=cache, progress=lambda m: print(m, file=sys.stderr)
        )
        (args.out / f"{dataset}.truth.json").write_text(json.dumps(truth, indent=1, default=str))
        print(
            f"{dataset:<14} {patients:>6} patients  -> {out}  ({time.perf_counter() - started:.1f}s; "
            f"counts in {args.out / (dataset + '.truth.json')})"
        )
    return 0


# --- ingest --------------------------------------------------------------------------------
def _ingest(args) -> int:
    """Ingestion runs the gated Dagster assets, which the pipelines package provides as an entry point."""
    from importlib.metadata import entry_points

    from .config import Settings

    found = entry_points(group="cxr.pipelines", name="ingest")
    if not found:
        print("cxr ingest: the pipelines package is not installed (pip install -e .)", file=sys.stderr)
        return EXIT_FAILED
    return next(iter(found)).load()(
        Settings.load(), args.dataset, allow_shrink=args.allow_shrink, workers=args.workers or _default_workers()
    )


def _default_workers() -> int:
    """Two processes on two or more cores: the runs are mostly one-threaded Python, and more would contend."""
    import os

    return 2 if (os.cpu_count() or 1) >= 2 else 1


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


# --- sql -----------------------------------------------------------------------------------
def _sql(args) -> int:
    """User SQL runs on a confined connection (read-only, time-limited); exports are written here, not by SQL."""
    from .api import Warehouse

    query = args.query
    if query.startswith("@"):
        query = Path(query[1:]).read_text()
    _warn_vocabulary(query)
    wh = Warehouse(as_of=args.as_of)
    # DuckDB draws its bar on stdout: only when that is a person's terminal and not the data itself
    con = wh.connect(progress=sys.stdout.isatty() and (args.format == "table" or args.out is not None))
    try:
        if args.format == "parquet" and args.out is None:
            print("cxr sql: --format parquet needs --out FILE", file=sys.stderr)
            return EXIT_USAGE
        if args.format == "table" and args.out is not None:
            print("cxr sql: --out writes csv, json or parquet; add --format csv (or json, parquet)", file=sys.stderr)
            return EXIT_USAGE
        result = wh.run(con, query)
        if args.format == "table":
            columns = [d[0] for d in result.description or []]
            rows = result.fetchmany(args.max_rows + 1)
            shown = rows[: args.max_rows]
            more = len(rows) > args.max_rows
            from .render import print_table

            caption = (
                f"first {args.max_rows} rows shown; use --format csv for all"
                if more
                else f"{len(shown)} row{'s' if len(shown) != 1 else ''}"
            )
            print_table(columns, shown, caption=caption)
            return 0
        from .export import export

        rows = export(result.to_arrow_reader(64 * 1024), args.format, args.out)
        if args.out is not None:
            print(f"wrote {rows:,} rows to {args.out} ({args.format})", file=sys.stderr)
    finally:
        con.close()
    return 0


# --- cohort --------------------------------------------------------------------------------
def _cohort_list(args) -> int:
    from .cohorts import list_cohorts
    from .render import print_table

    rows = [(c.name, c.unit, len(c.rules), ", ".join(p.name for p in c.params), c.description) for c in list_cohorts()]
    print_table(
        ["cohort", "unit", "rules", "parameters", "description"],
        rows,
        title="Cohorts",
        caption="cxr cohort show NAME; cxr cohort run NAME --out DIR",
        max_width=80,
    )
    return 0


def _cohort_show(args) -> int:
    from .cohorts import PLURAL, Cohort

    c = Cohort.load(args.name)
    print(f"{c.name} ({PLURAL[c.unit]}){' from ' + ', '.join(c.datasets) if c.datasets else ''}: {c.description}")
    print(f"file: {c.path}")
    if c.findings:
        print(f"findings: {', '.join(c.findings)} (uncertain: {c.uncertain})")
    for p in c.params:
        print(f"param {p.name} {p.type} = {p.default!r}{'  -- ' + p.doc if p.doc else ''}")
    for i, r in enumerate(c.rules, start=1):
        print(f"rule {i}. {r.name}{'  -- ' + r.doc if r.doc else ''}\n    " + "\n    ".join(r.sql.splitlines()))
    return 0


def _cohort_run(args) -> int:
    from .api import Warehouse
    from .cohorts import PLURAL, Cohort, CohortError

    params = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise CohortError(f"--param takes KEY=VALUE, not {item!r}")
        params[key.strip()] = value
    cohort = Cohort.load(args.name)
    run = cohort.run(
        Warehouse(),
        params,
        args.out,
        findings=args.finding,
        uncertain=args.uncertain,
        split=args.split,
        seed=args.seed,
        allow_leakage=args.allow_leakage,
        fmt=args.format,
    )
    from .render import print_table

    unit = PLURAL[cohort.unit]
    print_table(
        ["step", "rule", "images", "studies", "patients", f"{unit} removed", "by this rule alone"],
        [
            (
                a["step"],
                a["rule"],
                a["images"],
                a["studies"],
                a["patients"],
                a["units_removed"],
                a["removed_by_this_rule_alone"],
            )
            for a in run.attrition
        ],
        title=f"Cohort {cohort.name}",
    )
    others = [f.name for k, f in run.files.items() if k != "manifest"]
    print(f"wrote {run.manifest.num_rows:,} {unit} to {run.files['manifest']}, {', '.join(others)}", file=sys.stderr)
    return 0


def _cohort_verify(args) -> int:
    from .cohort_verify import report_lines, verify

    result = verify(args.dir)
    for line in report_lines(result):
        print(line)
    return 0 if result.reproducible else 1


def _warn_vocabulary(query: str) -> None:
    """A closed-vocabulary column compared with a value outside it (finding = 'pleural_efusion') is most
    likely a typo that returns nothing: say so on stderr, with the closest valid values, and run anyway."""
    from .cohorts import literal_problems

    for problem in literal_problems(query):
        print(f"cxr sql: warning: {problem}", file=sys.stderr)


# --- stats ---------------------------------------------------------------------------------
def _stats(args) -> int:
    if args.demographics or args.labels:
        return _stats_tables(args)
    from .queries import named_query
    from .render import print_table

    query = named_query("stats", "split_stats")
    con = _warehouse().connect()
    try:
        result = con.execute(
            f"SELECT * FROM ({query.sql}) WHERE ? IS NULL OR list_contains(?, dataset)", [args.dataset, args.dataset]
        )
        columns = [
            "dataset",
            "split",
            "studies",
            "images",
            "patients",
            "reports",
            "indication",
            "comparison",
            "findings",
            "impression",
        ]
        rows = result.fetchall()
    finally:
        con.close()
    print_table(
        columns,
        rows,
        title="Split statistics",
        caption="report columns: mean tokens per section over reports that have it; ∅ = no reports",
    )
    _print_notes(_warehouse(), sorted({r[0] for r in rows}))
    return 0


def _stats_tables(args) -> int:
    """Table 2 or the label prevalence, as the report builds them, one terminal table each."""
    from .render import print_table
    from .report import data, tables

    for d in data.load(_warehouse(), args.dataset):
        made = (
            tables.demographics(d)
            if args.demographics
            else [t for t in (tables.label_prevalence(d), tables.label_coverage(d)) if t is not None]
        )
        for t in made:
            rows = [
                [
                    tables.fmt(v, c.kind) + (f" ({note})" if note else "") if c.kind != "text" else v
                    for c, v, note in zip(t.columns, values, notes)
                ]
                for values, notes in zip(t.rows, t.notes)
            ]
            print_table(
                [(f"{c.group}: " if c.group and args.labels else "") + c.label for c in t.columns],
                rows,
                title=f"{d.dataset}: {t.title}",
                caption=t.caption,
                max_width=40,
                numeric=[c.kind != "text" for c in t.columns],
            )
        if not made:
            print(f"{d.dataset}: {'no demographics' if args.demographics else 'no labels'}")
    return 0


def _report(args) -> int:
    from .report import write_report

    files = write_report(_warehouse(), args.out, args.dataset, args.cohort)
    print(
        f"wrote {files.html} ({len(files.tables)} tables, {len(files.charts)} charts), {files.markdown.name} and "
        f"{len(files.csv)} CSV files in {files.csv[0].parent if files.csv else args.out} "
        f"({files.seconds:.1f}s)",
        file=sys.stderr,
    )
    return 0


def _print_notes(wh, datasets: list[str]) -> None:
    """Each dataset's notes (what its source folder lacked), under the table a person just read."""
    if not datasets:
        return
    con = wh.connect()
    try:
        rows = con.execute(
            "SELECT dataset, unnest(notes) FROM catalog_datasets WHERE list_contains(?, dataset) ORDER BY dataset",
            [datasets],
        ).fetchall()
    finally:
        con.close()
    if rows:
        print("Notes:")
        for dataset, note in rows:
            print(f"  {dataset}: {note}")


# --- catalog -------------------------------------------------------------------------------
def _catalog(args) -> int:
    from .render import print_table

    if args.table == "docs":
        return _catalog_docs(args)
    if args.table == "search":
        return _catalog_search(args)
    if args.term is not None:
        print(
            f"cxr catalog: unexpected {args.term!r} (only `catalog search TERM` takes a second word)", file=sys.stderr
        )
        return EXIT_USAGE
    if args.table == "rebuild":
        summary = _warehouse().refresh_catalog()
        print(
            f"rebuilt {summary.path}: warehouse version {summary.warehouse_version}, {summary.partitions} "
            f"table partitions, " + ", ".join(f"{t} {n:,}" for t, n in summary.tables.items() if n)
        )
        return 0
    con = _warehouse().connect()
    try:
        if args.table or args.columns:
            where = "WHERE table_name = ?" if args.table else ""
            rows = con.execute(
                f"SELECT table_name, column_name, type, CASE WHEN nullable THEN '' ELSE 'not null' END, "
                f"coalesce(array_to_string(allowed_values, ' '), ''), description FROM catalog_columns {where} "
                "ORDER BY table_name, position",
                [args.table] if args.table else [],
            ).fetchall()
            if not rows:
                print(f"cxr catalog: no table {args.table!r}", file=sys.stderr)
                return EXIT_FAILED
            print_table(
                ["table", "column", "type", "null", "allowed values", "description"],
                rows,
                title="Columns",
                max_width=80,
            )
            return 0
        datasets = con.execute(
            "SELECT dataset, name, access, CASE WHEN ingested THEN last_ingest ELSE 'not ingested' END, "
            "source_location FROM catalog_datasets ORDER BY dataset"
        ).fetchall()
        print_table(["dataset", "name", "access", "last ingest", "source"], datasets, title="Datasets")
        notes = con.execute("SELECT dataset, unnest(notes) FROM catalog_datasets ORDER BY dataset").fetchall()
        if notes:
            print("Notes:")
            for dataset, note in notes:
                print(f"  {dataset}: {note}")
        tables = con.execute(
            "SELECT table_name, rows, partitions, array_to_string(datasets, ' '), description "
            "FROM catalog_tables ORDER BY derived, table_name"
        ).fetchall()
        print_table(
            ["table", "rows", "partitions", "datasets", "description"],
            tables,
            title="Tables",
            caption="cxr catalog TABLE shows a table's columns; cxr catalog --columns shows all",
        )
    finally:
        con.close()
    return 0


def _catalog_docs(args) -> int:
    from .docs import write_docs

    if args.out is None:
        print("cxr catalog docs: --out DIR is required (the folder to write the data dictionary into)", file=sys.stderr)
        return EXIT_USAGE
    con = _warehouse().connect()
    try:
        written = write_docs(con, args.out)
    finally:
        con.close()
    model = written.model
    print(
        f"wrote the data dictionary of {len(model.tables)} tables, "
        f"{sum(len(t.columns) for t in model.tables)} columns and {len(model.findings)} findings to "
        f"{args.out / 'index.html'} (Markdown: {', '.join(p.name for p in written.files if p.suffix == '.md')})"
    )
    return 0


def _catalog_search(args) -> int:
    from .render import print_table
    from .search import search

    if not args.term or not args.term.strip():
        print("cxr catalog search: give a word to look for, e.g. cxr catalog search effusion", file=sys.stderr)
        return EXIT_USAGE
    con = _warehouse().connect()
    try:
        matches = search(con, args.term)
    finally:
        con.close()
    if not matches:
        print(
            f"cxr catalog search: nothing matches {args.term!r} (searched tables, columns, findings, raw labels, "
            "datasets, named queries and cohorts)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    shown = matches[: args.limit]
    caption = (
        f"{len(matches)} matches, first {len(shown)} shown (--limit)"
        if len(matches) > len(shown)
        else f"{len(matches)} match{'es' if len(matches) != 1 else ''}"
    )
    print_table(
        ["kind", "name", "match"],
        [(m.kind, m.name, m.snippet) for m in shown],
        title=f"Search: {args.term}",
        caption=caption,
        max_width=110,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
