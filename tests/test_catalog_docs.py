"""The data dictionary (`cxr catalog docs`) and `cxr catalog search`.

The page is opened in headless Chromium with every network request aborted and recorded; what it shows
is compared with plain SQL over the catalog's tables and with the raw NIH file (csv module), never with
the docs code's own numbers.
"""

from __future__ import annotations

import base64
import csv
import html
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from warehouse import Warehouse
from warehouse.cli import main
from warehouse.relations import REFERENCES
from warehouse.schema import TABLES
from warehouse.search import search

from .conftest import make_settings, nih_subset
from .test_cli import cxr

NIH_ROWS = 300
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path("/tmp/shots")


@pytest.fixture(scope="module")
def docs_warehouse(tmp_path_factory, cache_dir, raw_files):
    """NIH ChestX-ray14 from the first rows of the real file, and MIMIC-CXR from its generated sample."""
    tmp = tmp_path_factory.mktemp("docs")
    nih = nih_subset(raw_files, tmp / "src", NIH_ROWS)
    wh = Warehouse(make_settings(tmp, cache_dir, nih_cxr14=nih))
    wh.ingest(["nih_cxr14", "mimic_cxr"], say=lambda m: None)
    with open(nih / "Data_Entry_2017_v2020.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    return wh, rows


@pytest.fixture(scope="module")
def docs_dir(docs_warehouse, tmp_path_factory):
    wh, _ = docs_warehouse
    out = tmp_path_factory.mktemp("docs-out") / "dictionary"
    proc = cxr(wh, "catalog", "docs", "--out", str(out))
    assert "index.html" in proc.stdout
    return out


@pytest.fixture(scope="module")
def page(docs_dir):
    """index.html in Chromium: console and page errors and every request for anything but the page recorded."""
    if not CHROMIUM.exists():
        pytest.fail(f"the browser tests need Debian's chromium at {CHROMIUM}")
    index = (docs_dir / "index.html").as_uri()
    seen = {"errors": [], "outside": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1440, "height": 900})

        def refuse(route):
            if route.request.url.split("#")[0] == index:
                route.continue_()
            else:
                seen["outside"].append(route.request.url)
                route.abort()

        context.route("**/*", refuse)
        pg = context.new_page()
        pg.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: seen["errors"].append(str(e)))
        pg.on("request", lambda r: None if r.url.split("#")[0] == index else seen["outside"].append(r.url))
        pg.goto(index, wait_until="load")
        SHOTS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(SHOTS / "docs-top.png"))  # a full page takes ~10 s: the first screen and the diagram
        pg.locator("#erd").screenshot(path=str(SHOTS / "docs-erd.png"))
        yield pg, seen
        browser.close()


def _ids(pg, selector: str, attribute: str = "id") -> set[str]:
    return set(pg.eval_on_selector_all(selector, f"els => els.map(e => e.getAttribute('{attribute}'))"))


# --- the page -----------------------------------------------------------------------------------------
def test_the_page_opens_offline_without_errors(page):
    pg, seen = page
    assert seen["errors"] == []
    assert seen["outside"] == [], "the page asked for something beyond itself"
    assert pg.title() == "cxr-warehouse data dictionary"


def test_the_screenshot_is_not_blank(page):
    pg, _ = page
    png = base64.b64encode(pg.screenshot()).decode()
    blank = pg.context.new_page()
    stats = blank.evaluate(
        """async (b64) => {
        const img = new Image(); img.src = 'data:image/png;base64,' + b64; await img.decode();
        const c = document.createElement('canvas'); c.width = img.width; c.height = img.height;
        const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
        const d = ctx.getImageData(0, 0, c.width, c.height).data;
        let s = 0, s2 = 0, n = 0; const colours = new Set();
        for (let i = 0; i < d.length; i += 4) {
            const v = (d[i] + d[i + 1] + d[i + 2]) / 3; s += v; s2 += v * v; n++;
            if (colours.size < 5000) colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
        }
        const mean = s / n; return {width: c.width, variance: s2 / n - mean * mean, colours: colours.size};
    }""",
        png,
    )
    blank.close()
    assert stats["width"] == 1440
    assert stats["variance"] > 500 and stats["colours"] > 50, stats


def test_every_table_and_column_of_the_catalog_appears(page, docs_warehouse):
    pg, _ = page
    wh, _ = docs_warehouse
    tables = set(wh.sql("SELECT table_name FROM catalog_tables").column(0).to_pylist())
    assert tables == set(TABLES)
    assert {f"table-{t}" for t in tables} <= _ids(pg, "section[id^='table-']")
    assert {f"#table-{t}" for t in tables} <= _ids(pg, "nav a", "href")
    columns = wh.sql("SELECT table_name, column_name, description FROM catalog_columns").to_pylist()
    rows = dict(pg.eval_on_selector_all("tr[id^='column-']", "els => els.map(e => [e.id, e.innerText])"))
    for c in columns:
        text = rows.get(f"column-{c['table_name']}-{c['column_name']}")
        assert text is not None, f"{c['table_name']}.{c['column_name']} is missing"
        assert c["column_name"] in text and c["description"][:40] in " ".join(text.split())
    assert len(rows) == len(columns)


def test_the_diagram_has_a_box_per_table_and_a_line_per_reference(page):
    pg, _ = page
    assert _ids(pg, "svg#erd a.erd-box", "data-table") == set(TABLES)
    titles = pg.eval_on_selector_all("svg#erd path.edge title", "els => els.map(e => e.textContent)")
    expected = [f"{r.table}.({', '.join(r.columns)}) → {r.to_table}" for r in REFERENCES]
    assert sorted(titles) == sorted(expected)


def test_non_null_percentages_are_the_plain_counts(page, docs_warehouse):
    pg, _ = page
    wh, nih_rows = docs_warehouse
    for table, column in [
        ("patients", "sex_source"),
        ("studies", "age_years"),
        ("images", "width"),
        ("images", "view_source"),
        ("labels", "image_id"),
        ("reports", "findings"),
        ("patients", "race_source"),
    ]:
        expected = {
            r["dataset"]: (r["n"], r["rows"])
            for r in wh.sql(
                f'SELECT dataset, count("{column}") AS n, count(*) AS rows FROM "{table}" GROUP BY dataset'
            ).to_pylist()
        }
        cells = pg.eval_on_selector_all(
            f"#column-{table}-{column} td[data-dataset]",
            "els => els.map(e => [e.dataset.dataset, +e.dataset.nonNull, +e.dataset.rows, e.innerText])",
        )
        assert {d: (n, rows) for d, n, rows, _ in cells} == expected, f"{table}.{column}"
        for d, n, rows, text in cells:
            if n == rows:
                assert text == "100%"
            elif n == 0:
                assert text == "0%"
            else:
                assert abs(float(text.strip("%<>")) - 100 * n / rows) < 0.051, (table, column, d, text)
    # NIH from its raw file: every row has a width (column 7 of the csv), and so every image
    width = [
        c
        for c in pg.eval_on_selector_all(
            "#column-images-width td[data-dataset='nih_cxr14']",
            "els => els.map(e => [+e.dataset.nonNull, +e.dataset.rows])",
        )
    ]
    assert width == [[sum(1 for r in nih_rows if r[7].strip()), len(nih_rows)]]


def test_raw_labels_under_a_finding_are_the_plain_counts(page, docs_warehouse):
    pg, _ = page
    wh, nih_rows = docs_warehouse
    for finding in ("pleural_effusion", "cardiomegaly", "no_finding", "atelectasis"):
        shown = pg.eval_on_selector_all(
            f"#finding-{finding} ul.raw li",
            "els => els.map(e => [e.dataset.dataset, e.dataset.labeler, e.dataset.rawLabel, +e.dataset.rows])",
        )
        expected = wh.sql(
            "SELECT dataset, labeler, raw_label, count(*) AS n FROM labels WHERE finding = ? GROUP BY ALL", [finding]
        ).to_pylist()
        assert sorted(map(tuple, shown)) == sorted(tuple(r.values()) for r in expected), finding
        assert expected, finding
    effusion = pg.eval_on_selector_all(
        "#finding-pleural_effusion ul.raw li[data-dataset='nih_cxr14'][data-labeler='nih_nlp']",
        "els => els.map(e => [e.dataset.rawLabel, +e.dataset.rows])",
    )
    assert effusion == [["Effusion", sum(1 for r in nih_rows if "Effusion" in r[1].split("|"))]]
    unmapped = (
        wh.sql("SELECT count(*) FROM (SELECT DISTINCT dataset, labeler, raw_label FROM labels WHERE finding IS NULL)")
        .column(0)[0]
        .as_py()
    )
    assert pg.locator("#unmapped tbody tr[data-row]").count() == unmapped


def test_every_dataset_shows_every_registry_field(page, docs_warehouse):
    pg, _ = page
    wh, _ = docs_warehouse
    registry = wh.sql("SELECT * FROM catalog_datasets")
    for dataset in registry.column("dataset").to_pylist():
        fields = pg.eval_on_selector_all(f"#dataset-{dataset} dt", "els => els.map(e => e.innerText)")
        assert set(registry.column_names) - {"dataset", "name"} <= set(fields), dataset
        licences = [f for f in fields if f.lower().startswith("licen")]
        assert licences, f"{dataset} shows no licence"
    nih = pg.inner_text("#dataset-nih_cxr14")
    citation = wh.sql("SELECT citation FROM catalog_datasets WHERE dataset = 'nih_cxr14'").column(0)[0].as_py()
    assert " ".join(citation.split()) in " ".join(nih.split())


def test_queries_and_cohorts_are_listed_with_their_parameters(page):
    from warehouse.cohorts import list_cohorts
    from warehouse.queries import list_queries

    pg, _ = page
    listed = _ids(pg, "tr[id^='query-']")
    assert {f"query-{q.name}" for q in list_queries()} | {f"query-{c.name}" for c in list_cohorts()} == listed
    for c in list_cohorts():
        text = pg.inner_text(f"#query-{c.name}")
        assert all(p.name in text for p in c.params), c.name


def test_the_filter_box_hides_what_does_not_match(page):
    pg, _ = page
    pg.fill("#filter", "view_position")
    assert pg.is_visible("#column-images-view_position")
    assert not pg.is_visible("#column-patients-sex")
    assert not pg.is_visible("#table-reports")
    pg.fill("#filter", "")
    assert pg.is_visible("#column-patients-sex")


def test_the_markdown_names_every_table_and_column(docs_dir):
    text = (docs_dir / "tables.md").read_text()
    for name, table in TABLES.items():
        assert f"\n## {name}\n" in text
        for column in table.column_names:
            assert f"| `{column}` |" in text.split(f"\n## {name}\n")[1].split("\n## ")[0], f"{name}.{column}"
    assert (docs_dir / "erd.svg").read_text().startswith("<svg")
    for page_name in ("README.md", "findings.md", "datasets.md", "queries.md"):
        assert (docs_dir / page_name).stat().st_size > 200


# --- the declared references -------------------------------------------------------------------------
def test_references_name_real_keys_and_hold_on_the_data(docs_warehouse):
    wh, _ = docs_warehouse
    con = wh.connect()
    for r in REFERENCES:
        assert set(r.columns) <= set(TABLES[r.table].column_names), r
        assert r.to_columns == TABLES[r.to_table].key, r
        on = " AND ".join(f'b."{t}" = a."{c}"' for c, t in zip(r.columns, r.to_columns))
        fed = "SELECT DISTINCT dataset FROM \"{}\""
        orphans = con.execute(
            f'SELECT count(*) FROM "{r.table}" a WHERE a."{r.columns[-1]}" IS NOT NULL '
            f"AND a.dataset IN ({fed.format(r.to_table)}) "
            f'AND NOT EXISTS (SELECT 1 FROM "{r.to_table}" b WHERE b.dataset = a.dataset AND {on})'
        ).fetchone()[0]
        assert orphans == 0, r
    con.close()


# --- search ------------------------------------------------------------------------------------------
@pytest.fixture
def catalog_env(docs_warehouse, monkeypatch):
    wh, _ = docs_warehouse
    monkeypatch.setenv("CXR_WAREHOUSE", str(wh.settings.warehouse))
    monkeypatch.setenv("CXR_CATALOG", str(wh.settings.catalog))
    return wh


def _search(wh, term):
    con = wh.connect()
    try:
        return search(con, term)
    finally:
        con.close()


def test_search_finds_a_column_by_name(catalog_env, capsys):
    assert main(["catalog", "search", "view_position"]) == 0
    out = capsys.readouterr().out
    assert "images.view_position" in out and "image_labels.view_position" in out
    best = _search(catalog_env, "view_position")[0]
    assert (best.kind, best.name) in {("column", "images.view_position"), ("column", "image_labels.view_position")}


def test_search_finds_the_finding_of_a_raw_label(catalog_env):
    matches = _search(catalog_env, "Effusion")
    top = matches[0]
    assert (top.kind, top.name) == ("raw label", "Effusion") and "nih_cxr14" in top.snippet
    assert "pleural_effusion" in top.snippet
    assert ("finding", "pleural_effusion") in [(m.kind, m.name) for m in matches[:3]]


def test_search_finds_a_dataset_and_a_named_query(catalog_env):
    assert [(m.kind, m.name) for m in _search(catalog_env, "ChestX-ray14")][:1] == [("dataset", "nih_cxr14")]
    assert ("query", "vocab/unmapped_labels") in [(m.kind, m.name) for m in _search(catalog_env, "unmapped_labels")]
    assert ("cohort", "frontal_pneumothorax") in [(m.kind, m.name) for m in _search(catalog_env, "pneumothorax")]


def test_search_without_a_match_exits_1(catalog_env, capsys):
    assert main(["catalog", "search", "zzqxv-nothing"]) == 1
    captured = capsys.readouterr()
    assert "nothing matches 'zzqxv-nothing'" in captured.err and captured.out == ""


def test_registry_licences_and_bibtex_are_rendered(docs_warehouse, tmp_path):
    """Each dataset's licence (or 'unknown') and BibTeX, as the registry declares them, in the HTML and Markdown."""
    from warehouse.docs import write_docs
    from warehouse.sources import DATASETS, dataset_info

    wh, _ = docs_warehouse
    con = wh.connect()
    try:
        written = write_docs(con, tmp_path / "docs")
    finally:
        con.close()
    page = (written.folder / "index.html").read_text()
    markdown = (written.folder / "datasets.md").read_text()
    for dataset in DATASETS:
        info = dataset_info(dataset)
        card = page.split(f'id="dataset-{dataset}"')[1].split("</section>")[0]
        assert html.escape(info.licence, quote=False) in card, dataset
        assert info.bibtex and html.escape(info.bibtex.splitlines()[0], quote=False) in card, dataset
        assert f"- **licence**: {info.licence}" in markdown
    unknown = sum(dataset_info(d).licence == "unknown" for d in DATASETS)
    assert 0 < unknown < len(DATASETS) and markdown.count("- **licence**: unknown") == unknown
