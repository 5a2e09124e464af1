"""Cohort queries, per query: the catalog's views against the same rows in native DuckDB tables.

Researchers write cohort queries over the catalog (normalized joins of images, studies,
patients, labels, reports and boxes on (dataset, key), and the flat derived table image_labels).
Some of them never finish over the views (per-partition UNION ALLs of read_parquet over file
lists) while the same rows held in native DuckDB tables answer in a fraction of a second. This
benchmark runs a battery of such queries against both in the same run:

  views   the catalog opened exactly as `cxr sql` and `Warehouse.sql` open it (warehouse.confine,
          with the planner settings of warehouse.views);
  native  an in-memory DuckDB into which every table the query reads is copied first
          (ATTACH the catalog read-only, CREATE TABLE t AS SELECT * FROM cat.t, DETACH).

Both use the same threads and memory_limit (DuckDB's defaults unless --threads /
--memory-limit; the values are resolved once and passed to both explicitly). Per query and
engine: one cold run (discarded), then --repeat warm runs, median wall time; both engines' rows
must be identical (sorted, floats compared to 10 significant digits) or the query is a MISMATCH.

Time limit: each run is bounded by --timeout seconds with a threading.Timer calling
con.interrupt(); a run that hits it reports 'timeout' and the query fails. After a timeout the
remaining runs of that engine are skipped (they would only time out again).

Memory, and why it is measured this way: every (query, engine) pair runs in its own child
process (multiprocessing 'spawn'), so no allocator cache, buffer pool or Parquet metadata left
behind by an earlier query distorts the next one, and a runaway query can be killed without
taking the benchmark down. Inside the child, once the connection is ready (and, for native, the
tables are loaded), the kernel's peak-RSS counter is reset (`echo 5 > /proc/self/clear_refs`,
Linux >= 4.0) and read back after the runs (VmHWM in /proc/self/status). That is the exact peak
of the runs: unlike sampling it cannot miss a short spike, and unlike ru_maxrss (RUSAGE_SELF
cannot be reset and would include the native engine's table load; RUSAGE_CHILDREN is the maximum
over all children ever reaped, not per child) it covers only the runs. `peak MB` is that peak
minus the RSS just before the cold run; `abs MB` is the peak itself. The parent also samples the
child's RSS with psutil every 10 ms: that is the fallback where clear_refs is not available, the
figure for a child it had to kill, and a guard that kills a child whose RSS passes --rss-cap-gb
(verdict MEMORY) before it can exhaust the machine.

Targets (from the issue), for each query: views within 2x of the native time, under 1 s warm on
the views, under 2 GB peak (peak MB of the views run). Verdicts, first failure wins: MISMATCH,
TIMEOUT, MEMORY (guard killed it), ERROR, SLOW (ratio or 1 s), MEMORY (over 2 GB), else ok.

Local warehouses only (a catalog whose views read s3:// needs the store's fsspec registration).

Run: python benchmarks/cohort_queries.py [--catalog PATH] [--repeat 5] [--timeout 30] [--quick]
     [--only NAME[,NAME...]] [--list]
Writes benchmarks/results/cohort_queries.json. Exits 1 if a query misses a target.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import multiprocessing as mp
import os
import platform
import re
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET_RATIO = 2.0  # views median / native median
TARGET_VIEWS_S = 1.0  # views median, warm
TARGET_PEAK_MB = 2048  # views peak RSS above the RSS before the query
SAMPLE_EVERY_S = 0.01
GRACE_S = 15.0  # past the time limit before the parent kills a child that ignored the interrupt
SETUP_LIMIT_S = 900.0  # connecting, and for native copying the tables


# --- the battery ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CohortQuery:
    name: str
    description: str
    sql: str


ALL_DATASETS = (
    "'nih_cxr14', 'chexpert', 'chexpert_plus', 'mimic_cxr', 'mimic_qba', 'rexgradient', 'iu_xray', 'padchest'"
)

BATTERY: list[CohortQuery] = [
    # normalized tables ---------------------------------------------------------------------
    CohortQuery(
        "bug_report_women_40_60",
        "The query of the bug report: images of women aged 40-60 in NIH and CheXpert.",
        """
SELECT count(*) FROM images i
JOIN studies s USING (dataset, study_id)
JOIN patients p ON p.dataset = i.dataset AND p.patient_id = i.patient_id
WHERE i.dataset IN ('nih_cxr14','chexpert') AND p.sex = 'F' AND s.age_years BETWEEN 40 AND 60
""",
    ),
    CohortQuery(
        "effusion_frontal_by_sex",
        "README's normalized cohort: frontal images with a positive pleural effusion label, by dataset and sex.",
        """
SELECT i.dataset, p.sex, count(*) AS n
FROM images i
JOIN labels l USING (dataset, image_id)
JOIN patients p USING (dataset, patient_id)
WHERE i.is_frontal AND l.finding = 'pleural_effusion' AND l.value = 1
GROUP BY ALL ORDER BY ALL
""",
    ),
    CohortQuery(
        "chexpert_ap_pneumothorax",
        "CheXpert AP images the CheXpert labeler calls positive for pneumothorax.",
        """
SELECT count(*) AS images
FROM images i
JOIN labels l ON l.dataset = i.dataset AND l.image_id = i.image_id
WHERE i.dataset = 'chexpert' AND i.view_position = 'AP'
  AND l.labeler = 'chexpert' AND l.finding = 'pneumothorax' AND l.value = 1
""",
    ),
    CohortQuery(
        "uncertain_by_labeler_sex",
        "Uncertain (-1) labels per labeler and patient sex in the CheXpert / MIMIC family (study join).",
        """
SELECT l.dataset, l.labeler, p.sex, count(*) AS labels
FROM labels l
JOIN studies s ON s.dataset = l.dataset AND s.study_id = l.study_id
JOIN patients p ON p.dataset = s.dataset AND p.patient_id = s.patient_id
WHERE l.dataset IN ('chexpert', 'chexpert_plus', 'mimic_cxr', 'mimic_qba') AND l.value = -1
GROUP BY ALL ORDER BY ALL
""",
    ),
    CohortQuery(
        "men_65_cardiomegaly_8_datasets",
        "Studies and patients of men aged 65+ with positive cardiomegaly, all eight datasets listed.",
        f"""
SELECT s.dataset, count(DISTINCT s.study_id) AS studies, count(DISTINCT p.patient_id) AS patients
FROM studies s
JOIN patients p ON p.dataset = s.dataset AND p.patient_id = s.patient_id
JOIN labels l ON l.dataset = s.dataset AND l.study_id = s.study_id
WHERE s.dataset IN ({ALL_DATASETS})
  AND p.sex = 'M' AND s.age_years >= 65 AND l.finding = 'cardiomegaly' AND l.value = 1
GROUP BY ALL ORDER BY ALL
""",
    ),
    CohortQuery(
        "frontal_positive_by_split",
        "Frontal images of studies positive for effusion / edema / consolidation, by split and labeler.",
        """
SELECT i.dataset, i.split, l.labeler, count(DISTINCT i.image_id) AS images
FROM images i
JOIN labels l ON l.dataset = i.dataset AND l.study_id = i.study_id
WHERE i.dataset IN ('mimic_cxr', 'mimic_qba', 'rexgradient') AND i.is_frontal AND l.value = 1
  AND l.finding IN ('pleural_effusion', 'edema', 'consolidation')
GROUP BY ALL ORDER BY ALL
""",
    ),
    CohortQuery(
        "nih_pa_boxes_by_sex_age",
        "NIH bounding boxes on PA images by finding, sex and age over 50, with mean box area.",
        """
SELECT b.finding, p.sex, s.age_years >= 50 AS over_50, count(*) AS boxes, avg(b.w * b.h) AS mean_area
FROM boxes b
JOIN images i ON i.dataset = b.dataset AND i.image_id = b.image_id
JOIN studies s ON s.dataset = i.dataset AND s.study_id = i.study_id
JOIN patients p ON p.dataset = i.dataset AND p.patient_id = i.patient_id
WHERE b.dataset = 'nih_cxr14' AND i.view_position = 'PA'
GROUP BY ALL ORDER BY ALL
""",
    ),
    CohortQuery(
        "effusion_reports_women_50_80",
        "Five tables: frontal images of women 50-80 with positive effusion whose report says so "
        "(PadChest reports are stemmed Spanish: derram-).",
        """
SELECT i.dataset, count(DISTINCT i.image_id) AS images, count(DISTINCT s.study_id) AS studies
FROM images i
JOIN studies s ON s.dataset = i.dataset AND s.study_id = i.study_id
JOIN patients p ON p.dataset = i.dataset AND p.patient_id = i.patient_id
JOIN reports r ON r.dataset = s.dataset AND r.study_id = s.study_id
JOIN labels l ON l.dataset = s.dataset AND l.study_id = s.study_id
WHERE i.dataset IN ('mimic_cxr', 'padchest', 'iu_xray', 'rexgradient')
  AND i.is_frontal AND p.sex = 'F' AND s.age_years BETWEEN 50 AND 80
  AND l.finding = 'pleural_effusion' AND l.value = 1
  AND (r.full_text ILIKE '%effusion%' OR r.full_text ILIKE '%derram%')
GROUP BY ALL ORDER BY ALL
""",
    ),
    CohortQuery(
        "effusion_edema_age_bands",
        "Four tables: frontal NIH + CheXpert images positive for effusion or edema by sex and 20-year band.",
        """
SELECT l.finding, p.sex, floor(s.age_years / 20) * 20 AS age_band, count(*) AS images
FROM images i
JOIN studies s USING (dataset, study_id)
JOIN patients p ON p.dataset = i.dataset AND p.patient_id = i.patient_id
JOIN labels l ON l.dataset = i.dataset AND l.image_id = i.image_id
WHERE i.dataset IN ('nih_cxr14', 'chexpert') AND i.is_frontal
  AND l.finding IN ('pleural_effusion', 'edema') AND l.value = 1
GROUP BY ALL ORDER BY ALL
""",
    ),
    CohortQuery(
        "padchest_copd_reports_by_sex",
        "PadChest studies with COPD signs that have a report, by sex, with mean report length.",
        """
SELECT p.sex, count(DISTINCT r.study_id) AS studies, avg(length(r.full_text)) AS mean_chars
FROM reports r
JOIN labels l ON l.dataset = r.dataset AND l.study_id = r.study_id
JOIN patients p ON p.dataset = r.dataset AND p.patient_id = r.patient_id
WHERE r.dataset = 'padchest' AND l.labeler = 'padchest' AND l.finding = 'copd_signs' AND l.value = 1
GROUP BY ALL ORDER BY ALL
""",
    ),
    CohortQuery(
        "view_mix_women",
        "View positions of women's images per dataset, no dataset filter.",
        """
SELECT i.dataset, i.view_position, count(*) AS images
FROM images i
JOIN patients p ON p.dataset = i.dataset AND p.patient_id = i.patient_id
WHERE p.sex = 'F'
GROUP BY ALL ORDER BY ALL
""",
    ),
    CohortQuery(
        "frontal_lateral_pairs",
        "Studies with both a frontal and a lateral image (images joined to itself), five datasets.",
        """
SELECT f.dataset, count(DISTINCT f.study_id) AS studies
FROM images f
JOIN images l ON l.dataset = f.dataset AND l.study_id = f.study_id
WHERE f.dataset IN ('chexpert', 'mimic_cxr', 'iu_xray', 'padchest', 'rexgradient')
  AND f.is_frontal AND l.view_position = 'LATERAL'
GROUP BY ALL ORDER BY ALL
""",
    ),
    CohortQuery(
        "valid_test_demographics",
        "Valid and test images by dataset, split and sex, with mean age, six datasets.",
        """
SELECT i.dataset, i.split, p.sex, count(*) AS images, avg(s.age_years) AS mean_age
FROM images i
JOIN studies s ON s.dataset = i.dataset AND s.study_id = i.study_id
JOIN patients p ON p.dataset = i.dataset AND p.patient_id = i.patient_id
WHERE i.dataset IN ('nih_cxr14', 'chexpert', 'mimic_cxr', 'mimic_qba', 'rexgradient', 'padchest')
  AND i.split IN ('valid', 'test')
GROUP BY ALL ORDER BY ALL
""",
    ),
    CohortQuery(
        "young_no_finding_7_datasets",
        "Studies of patients under 30 (known sex) labeled no finding, by dataset and labeler, seven datasets.",
        """
SELECT s.dataset, l.labeler, count(DISTINCT s.study_id) AS studies
FROM labels l
JOIN studies s ON s.dataset = l.dataset AND s.study_id = l.study_id
JOIN patients p ON p.dataset = s.dataset AND p.patient_id = s.patient_id
WHERE l.dataset IN ('nih_cxr14', 'chexpert', 'chexpert_plus', 'mimic_cxr', 'mimic_qba', 'iu_xray', 'padchest')
  AND l.finding = 'no_finding' AND l.value = 1 AND s.age_years < 30 AND p.sex IN ('F', 'M')
GROUP BY ALL ORDER BY ALL
""",
    ),
    CohortQuery(
        "mimic_chexpert_vs_negbio",
        "Agreement of the CheXpert and NegBio labelers per MIMIC-CXR study and finding (labels joined to itself).",
        """
SELECT c.finding, c.value AS chexpert, n.value AS negbio, count(*) AS studies
FROM labels c
JOIN labels n ON n.dataset = c.dataset AND n.study_id = c.study_id AND n.finding = c.finding
WHERE c.dataset = 'mimic_cxr' AND c.labeler = 'chexpert' AND n.labeler = 'negbio'
GROUP BY ALL ORDER BY ALL
""",
    ),
    CohortQuery(
        "exists_pneumothorax_frontal",
        "Frontal images whose study has a positive pneumothorax label (EXISTS), by dataset and sex.",
        """
SELECT i.dataset, p.sex, count(*) AS images
FROM images i
JOIN patients p ON p.dataset = i.dataset AND p.patient_id = i.patient_id
WHERE i.dataset IN ('nih_cxr14', 'chexpert', 'padchest') AND i.is_frontal
  AND EXISTS (SELECT 1 FROM labels l
              WHERE l.dataset = i.dataset AND l.study_id = i.study_id
                AND l.finding = 'pneumothorax' AND l.value = 1)
GROUP BY ALL ORDER BY ALL
""",
    ),
    # the flat derived table ----------------------------------------------------------------
    CohortQuery(
        "flat_effusion_frontal_by_sex",
        "README's flat cohort: frontal positive pleural effusion by dataset and sex.",
        """
SELECT dataset, sex, count(*) AS n FROM image_labels
WHERE is_frontal AND finding = 'pleural_effusion' AND value = 1
GROUP BY ALL ORDER BY ALL
""",
    ),
    CohortQuery(
        "flat_chexpert_uncertain_women_40_60",
        "Frontal CheXpert images of women 40-60 with an uncertain CheXpert label, by finding.",
        """
SELECT finding, count(*) AS images FROM image_labels
WHERE dataset = 'chexpert' AND labeler = 'chexpert' AND value = -1
  AND sex = 'F' AND age_years BETWEEN 40 AND 60 AND is_frontal
GROUP BY ALL ORDER BY ALL
""",
    ),
    CohortQuery(
        "flat_pneumothorax_5_datasets",
        "Frontal images positive for pneumothorax in five datasets, by dataset and labeler.",
        """
SELECT dataset, labeler, count(DISTINCT image_id) AS images FROM image_labels
WHERE dataset IN ('nih_cxr14', 'chexpert', 'mimic_cxr', 'mimic_qba', 'padchest')
  AND finding = 'pneumothorax' AND value = 1 AND is_frontal
GROUP BY ALL ORDER BY ALL
""",
    ),
    CohortQuery(
        "flat_cardiomegaly_age_bands",
        "Positive cardiomegaly by dataset, sex and age band, no dataset filter.",
        """
SELECT dataset, sex,
       CASE WHEN age_years < 40 THEN '<40' WHEN age_years < 65 THEN '40-64' WHEN age_years >= 65 THEN '65+' END
         AS age_band,
       count(*) AS n
FROM image_labels
WHERE finding = 'cardiomegaly' AND value = 1
GROUP BY ALL ORDER BY ALL
""",
    ),
    CohortQuery(
        "flat_men_60_patients_8_datasets",
        "Distinct men over 60 positive for atelectasis / edema / effusion by five labelers, eight datasets listed.",
        f"""
SELECT dataset, finding, count(DISTINCT patient_id) AS patients FROM image_labels
WHERE dataset IN ({ALL_DATASETS})
  AND sex = 'M' AND age_years > 60 AND value = 1
  AND finding IN ('atelectasis', 'edema', 'pleural_effusion')
  AND labeler IN ('chexpert', 'chexbert', 'negbio', 'nih_nlp', 'padchest')
GROUP BY ALL ORDER BY ALL
""",
    ),
]


# --- reading a query -----------------------------------------------------------------------


def tables_of(sql: str) -> list[str]:
    """The tables a query reads, once per reference (a self-join counts twice), in query order.

    DuckDB parses the query (json_serialize_sql, no binding) and the base-table references are
    collected from the tree, leaving out the names of the query's own CTEs.
    """
    import duckdb

    con = duckdb.connect()
    try:
        tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    finally:
        con.close()
    if tree.get("error"):
        raise ValueError(f"cannot parse query: {tree.get('error_message')}")
    found: list[tuple[int, str]] = []
    ctes: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            if node.get("type") == "BASE_TABLE" and "table_name" in node:
                found.append((node.get("query_location", 0), node["table_name"]))
            for entry in (node.get("cte_map") or {}).get("map", []) or []:
                if isinstance(entry, dict) and "key" in entry:
                    ctes.add(entry["key"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(tree)
    return [name for _, name in sorted(found) if name not in ctes]


_DATASET_IN = re.compile(r"\bdataset\s+IN\s*\(([^)]*)\)", re.IGNORECASE)
_DATASET_EQ = re.compile(r"\bdataset\s*=\s*'([^']*)'", re.IGNORECASE)


def datasets_of(sql: str) -> list[str] | None:
    """The datasets a query filters on (dataset IN (...) or dataset = '...'); None: no filter, all."""
    names: list[str] = []
    for listing in _DATASET_IN.findall(sql):
        names += re.findall(r"'([^']*)'", listing)
    names += _DATASET_EQ.findall(sql)
    return sorted(set(names)) or None


# --- one engine, one query, in a child process ---------------------------------------------


def _rss(pid: int | None = None) -> int:
    import psutil

    return psutil.Process(pid).memory_info().rss


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _query_connection(catalog: str, config: dict):
    """The connection `cxr sql` and `Warehouse.sql` use: confined, planner settings of warehouse.views."""
    import duckdb

    from warehouse.confine import Limits, confined_connection
    from warehouse.views import PLANNER_SETTINGS

    probe = duckdb.connect(":memory:")
    probe.execute(f"ATTACH '{catalog.replace(chr(39), chr(39) * 2)}' AS cat (READ_ONLY)")
    root = dict(probe.execute("SELECT key, value FROM cat.catalog_meta").fetchall())["warehouse_root"]
    probe.close()
    limits = Limits(memory_limit=str(config["memory_limit"]), threads=int(config["threads"]))
    return confined_connection(Path(catalog), readable=[root], limits=limits, settings=PLANNER_SETTINGS)


def _open(engine: str, catalog: str, tables: list[str], config: dict):
    import duckdb

    if engine == "views":
        return _query_connection(catalog, config)
    con = duckdb.connect(":memory:", config=config)
    con.execute(f"ATTACH '{catalog.replace(chr(39), chr(39) * 2)}' AS cat (READ_ONLY)")
    for name in dict.fromkeys(tables):
        con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM cat."{name}"')
    con.execute("DETACH cat")
    return con


def _child(
    pipe, engine: str, catalog: str, sql: str, tables: list[str], repeat: int, timeout: float, config: dict
) -> None:
    """Runs in the child: set up, one cold run, `repeat` warm runs; reports over `pipe`."""
    import duckdb

    try:
        started = time.perf_counter()
        con = _open(engine, catalog, tables, config)
        setup_s = time.perf_counter() - started
        gc.collect()
        rss_before = _rss()
        exact = _reset_peak_rss()
        pipe.send(("ready", setup_s, rss_before))
        rows = None
        for run in range(repeat + 1):
            timer = threading.Timer(timeout, con.interrupt)
            timer.start()
            t0 = time.perf_counter()
            try:
                result = con.execute(sql).fetchall()
                seconds, status = time.perf_counter() - t0, "ok"
            except duckdb.InterruptException:
                seconds, status, result = time.perf_counter() - t0, "timeout", None
            finally:
                timer.cancel()
            pipe.send(("run", run, seconds, status))
            if status != "ok":
                break
            rows = result
        pipe.send(("done", rows, _peak_rss() if exact else None))
        con.close()
    except Exception as e:
        pipe.send(("error", f"{type(e).__name__}: {e}"))


@dataclass
class EngineRun:
    engine: str
    status: str = "ok"  # ok, timeout, memory (killed by the RSS guard), error
    setup_s: float | None = None
    cold_s: float | None = None
    warm_s: list[float] = field(default_factory=list)
    median_s: float | None = None
    rows: list | None = None
    rss_before_mb: float | None = None
    peak_abs_mb: float | None = None
    peak_mb: float | None = None  # peak_abs_mb - rss_before_mb
    peak_method: str | None = None  # VmHWM (exact) or sampled (psutil every 10 ms)
    error: str | None = None


class _Sampler(threading.Thread):
    """Samples a child's RSS every 10 ms; kills it past the cap."""

    def __init__(self, proc, cap_bytes: int):
        super().__init__(daemon=True)
        self.proc, self.cap, self.peak, self.killed = proc, cap_bytes, 0, False
        self.measuring = threading.Event()
        self.stopped = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            child = psutil.Process(self.proc.pid)
            while not self.stopped.is_set():
                rss = child.memory_info().rss
                if self.measuring.is_set():
                    self.peak = max(self.peak, rss)
                if rss > self.cap:
                    self.killed = True
                    self.proc.kill()
                    return
                time.sleep(SAMPLE_EVERY_S)
        except psutil.Error:
            return


def run_engine(
    engine: str,
    catalog: Path,
    query: CohortQuery,
    tables: list[str],
    *,
    repeat: int,
    timeout: float,
    config: dict,
    rss_cap_bytes: int,
) -> EngineRun:
    ctx = mp.get_context("spawn")
    parent_end, child_end = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_child, args=(child_end, engine, str(catalog), query.sql, tables, repeat, timeout, config), daemon=True
    )
    proc.start()
    child_end.close()
    sampler = _Sampler(proc, rss_cap_bytes)
    sampler.start()
    out = EngineRun(engine)
    times: list[float] = []
    hwm = None
    wait = SETUP_LIMIT_S
    try:
        while True:
            if not parent_end.poll(wait):
                out.status, out.error = "timeout", f"no answer within {wait:.0f} s; child killed"
                break
            try:
                message = parent_end.recv()
            except EOFError:
                out.status = "memory" if sampler.killed else "error"
                out.error = (
                    "killed: RSS passed the guard" if sampler.killed else f"child died (exit code {proc.exitcode})"
                )
                break
            kind = message[0]
            if kind == "ready":
                _, out.setup_s, rss_before = message
                out.rss_before_mb = rss_before / 2**20
                sampler.measuring.set()
                wait = timeout + GRACE_S
            elif kind == "run":
                _, run, seconds, status = message
                if run == 0:
                    out.cold_s = seconds
                else:
                    times.append(seconds)
                if status != "ok":
                    out.status = status
            elif kind == "done":
                _, out.rows, hwm = message
                break
            elif kind == "error":
                out.status, out.error = "error", message[1]
                break
    finally:
        sampler.stopped.set()
        if proc.is_alive():
            proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()
        sampler.join()
        parent_end.close()
    if sampler.killed:
        out.status, out.error = "memory", f"killed: RSS passed the {rss_cap_bytes / 2**30:.1f} GiB guard"
    out.warm_s = times
    if out.status == "ok" and times:
        out.median_s = statistics.median(times)
    if hwm is not None:
        out.peak_abs_mb, out.peak_method = max(hwm, sampler.peak) / 2**20, "VmHWM"
    elif sampler.peak:
        out.peak_abs_mb, out.peak_method = sampler.peak / 2**20, "sampled"
    if out.peak_abs_mb is not None and out.rss_before_mb is not None:
        out.peak_mb = out.peak_abs_mb - out.rss_before_mb
    return out


# --- comparing and judging -----------------------------------------------------------------


def _canonical(value):
    if isinstance(value, float):
        return float(f"{value:.10g}") if math.isfinite(value) else str(value)
    return value


def canonical_rows(rows: list) -> list[tuple]:
    rows = [tuple(_canonical(v) for v in row) for row in rows]
    return sorted(rows, key=lambda row: tuple((v is None, str(type(v)), v if v is not None else 0) for v in row))


@dataclass
class QueryResult:
    name: str
    description: str
    sql: str
    datasets: list[str] | None
    tables: list[str]
    views: EngineRun
    native: EngineRun
    rows_returned: int | None = None
    rows_match: bool | None = None  # None: not compared (an engine did not finish)
    ratio: float | None = None
    ratio_is_lower_bound: bool = False  # views timed out: the ratio is at least this
    verdict: str = "ok"
    failures: list[str] = field(default_factory=list)


def judge(q: CohortQuery, datasets, tables, views: EngineRun, native: EngineRun, timeout: float) -> QueryResult:
    r = QueryResult(q.name, q.description, q.sql.strip(), datasets, tables, views, native)
    done = [e for e in (views, native) if e.status == "ok"]
    if done:
        r.rows_returned = len(done[-1].rows or [])
    if views.status == "ok" and native.status == "ok":
        r.rows_match = canonical_rows(views.rows or []) == canonical_rows(native.rows or [])
    if native.median_s:
        if views.median_s is not None:
            r.ratio = views.median_s / native.median_s
        elif views.status == "timeout":
            r.ratio, r.ratio_is_lower_bound = timeout / native.median_s, True
    if r.rows_match is False:
        r.failures.append("MISMATCH")
    for e in (views, native):
        label = "" if e.engine == "views" else " (native)"
        if e.status == "timeout":
            r.failures.append("TIMEOUT" + label)
        elif e.status == "memory":
            r.failures.append("MEMORY" + label)
        elif e.status == "error":
            r.failures.append("ERROR" + label)
    if (
        views.status == "ok"
        and native.status == "ok"
        and ((r.ratio is not None and r.ratio > TARGET_RATIO) or (views.median_s or 0) > TARGET_VIEWS_S)
    ):
        r.failures.append("SLOW")
    if (
        views.peak_mb is not None
        and views.peak_mb > TARGET_PEAK_MB
        and not any(f.startswith("MEMORY") for f in r.failures)
    ):
        r.failures.append("MEMORY")
    r.verdict = r.failures[0].split(" ")[0] if r.failures else "ok"
    return r


# --- reporting ------------------------------------------------------------------------------

SHORT = {
    "images": "img",
    "studies": "stu",
    "patients": "pat",
    "labels": "lab",
    "reports": "rep",
    "boxes": "box",
    "image_labels": "flat",
}


def _s(seconds: float | None, status: str) -> str:
    if seconds is not None:
        return f"{seconds:.4f}"
    return {"timeout": "timeout", "memory": "killed", "error": "error"}.get(status, "-")


def _mb(mb: float | None) -> str:
    return "-" if mb is None else f"{mb:,.0f}"


def print_table(results: list[QueryResult], timeout: float) -> None:
    header = (
        f"{'query':<36} {'datasets':>8}  {'tables':<24} {'rows':>5}  {'views s':>9} {'native s':>9} "
        f"{'ratio':>9}  {'peak MB':>8} {'abs MB':>7} {'nat MB':>7}  verdict"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        ds = "all" if r.datasets is None else str(len(r.datasets))
        tables = f"{len(r.tables)} " + ",".join(SHORT.get(t, t) for t in r.tables)
        if r.ratio is None:
            ratio = "-"
        else:
            ratio = (">" if r.ratio_is_lower_bound else "") + f"{r.ratio:,.1f}x"
        peak = _mb(r.views.peak_mb) + ("+" if r.views.status in ("timeout", "memory") else "")
        print(
            f"{r.name:<36} {ds:>8}  {tables:<24} {'-' if r.rows_returned is None else r.rows_returned:>5}  "
            f"{_s(r.views.median_s, r.views.status):>9} {_s(r.native.median_s, r.native.status):>9} "
            f"{ratio:>9}  {peak:>8} {_mb(r.views.peak_abs_mb):>7} {_mb(r.native.peak_mb):>7}  "
            f"{r.verdict}{' (' + ', '.join(r.failures[1:]) + ')' if len(r.failures) > 1 else ''}"
        )
    print(
        f"  tables: {', '.join(f'{v}={k}' for k, v in SHORT.items())}; 'peak MB' = views peak RSS above the "
        f"RSS before the query ('+': cut short at the {timeout:g} s limit or killed), 'abs MB' = views peak "
        "RSS, 'nat MB' = native peak RSS above its RSS before the query (tables loaded)"
    )


def summarize(results: list[QueryResult]) -> dict:
    ok = [r for r in results if r.verdict == "ok"]
    rated = [r for r in results if r.ratio is not None]
    completed = [r.ratio for r in rated if not r.ratio_is_lower_bound]
    worst = max(rated, key=lambda r: r.ratio, default=None)
    return {
        "queries": len(results),
        "meet_all_targets": len(ok),
        "timeouts": sum(r.views.status == "timeout" for r in results),
        "mismatches": [r.name for r in results if r.rows_match is False],
        "worst_ratio": worst.ratio if worst else None,
        "worst_ratio_query": worst.name if worst else None,
        "worst_ratio_is_lower_bound": worst.ratio_is_lower_bound if worst else None,
        "median_ratio": statistics.median(r.ratio for r in rated) if rated else None,
        "median_ratio_completed_only": statistics.median(completed) if completed else None,
    }


def print_summary(s: dict) -> None:
    worst = (
        "-"
        if s["worst_ratio"] is None
        else (f"{'>' if s['worst_ratio_is_lower_bound'] else ''}{s['worst_ratio']:,.1f}x ({s['worst_ratio_query']})")
    )
    median = "-" if s["median_ratio"] is None else f"{s['median_ratio']:,.1f}x"
    completed = s["median_ratio_completed_only"]
    completed = "-" if completed is None else f"{completed:,.1f}x"
    print(
        f"\n{s['meet_all_targets']} of {s['queries']} queries meet all targets (views <= {TARGET_RATIO:g}x native, "
        f"< {TARGET_VIEWS_S:g} s warm, < {TARGET_PEAK_MB / 1024:g} GB); {s['timeouts']} time out on the views; "
        f"worst ratio {worst}; median ratio {median} (timeouts at their lower bound; "
        f"{completed} over completed queries only)"
    )


def machine_info(catalog: Path, config: dict, args) -> dict:
    import duckdb
    import psutil

    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_physical": psutil.cpu_count(logical=False),
        "total_memory_gib": round(psutil.virtual_memory().total / 2**30, 2),
        "duckdb_version": duckdb.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "catalog": str(catalog),
        "duckdb_config": config,
        "repeat": args.repeat,
        "timeout_s": args.timeout,
        "rss_guard_gib": args.rss_cap_gb,
        # the timings are only as steady as the machine is idle: other work shows here
        "load_average_1_5_15_at_start": list(args.load_at_start),
        "load_average_1_5_15_at_end": list(os.getloadavg()),
    }


# --- main -----------------------------------------------------------------------------------


def _resolve_config(threads: int | None, memory_limit: str | None) -> dict:
    """The threads and memory_limit both engines get: the given values, else DuckDB's defaults."""
    import duckdb

    con = duckdb.connect()
    try:
        default_threads, default_memory = con.execute(
            "SELECT current_setting('threads'), current_setting('memory_limit')"
        ).fetchone()
    finally:
        con.close()
    return {"threads": int(threads or default_threads), "memory_limit": memory_limit or default_memory}


def main(argv: list[str] | None = None) -> int:
    import psutil

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", type=Path, help="catalog file (default: the configured catalog)")
    parser.add_argument("--repeat", type=int, default=5, help="warm runs per query and engine (default 5)")
    parser.add_argument("--timeout", type=float, default=30.0, help="time limit per run in seconds (default 30)")
    parser.add_argument("--quick", action="store_true", help="2 warm runs instead of --repeat")
    parser.add_argument("--only", help="run only these queries (comma-separated names)")
    parser.add_argument("--list", action="store_true", help="list the queries and exit")
    parser.add_argument("--threads", type=int, help="DuckDB threads for both engines (default: DuckDB's)")
    parser.add_argument("--memory-limit", help="DuckDB memory_limit for both engines, e.g. 8GB (default: DuckDB's)")
    parser.add_argument(
        "--rss-cap-gb",
        type=float,
        default=round(psutil.virtual_memory().total * 0.6 / 2**30, 1),
        help="kill a child whose RSS passes this (default 60%% of RAM)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cohort_queries.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat = min(args.repeat, 2)

    battery = BATTERY
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - {q.name for q in BATTERY})
        if unknown:
            parser.error(f"unknown query {', '.join(unknown)}; known: {', '.join(q.name for q in BATTERY)}")
        battery = [q for q in BATTERY if q.name in wanted]
    if args.list:
        for q in battery:
            ds = datasets_of(q.sql)
            print(
                f"{q.name:<36} {'all' if ds is None else ','.join(ds):<40} {'+'.join(tables_of(q.sql)):<40} "
                f"{q.description}"
            )
        return 0

    if args.catalog is None:
        from warehouse.config import Settings

        args.catalog = Settings.load().catalog
    catalog = args.catalog.resolve()
    if not catalog.exists():
        print(f"no catalog at {catalog}: run `cxr ingest` first or pass --catalog", file=sys.stderr)
        return 2
    config = _resolve_config(args.threads, args.memory_limit)
    args.load_at_start = os.getloadavg()
    cap = int(args.rss_cap_gb * 2**30)
    print(
        f"catalog {catalog}; threads {config['threads']}, memory_limit {config['memory_limit']}; "
        f"1 cold + {args.repeat} warm runs per engine; limit {args.timeout:g} s per run; "
        f"load average {args.load_at_start[0]:.1f} on {os.cpu_count()} CPUs",
        file=sys.stderr,
    )

    results: list[QueryResult] = []
    for i, q in enumerate(battery, 1):
        tables, datasets = tables_of(q.sql), datasets_of(q.sql)
        print(f"[{i}/{len(battery)}] {q.name} ...", end="", file=sys.stderr, flush=True)
        runs = {
            engine: run_engine(
                engine, catalog, q, tables, repeat=args.repeat, timeout=args.timeout, config=config, rss_cap_bytes=cap
            )
            for engine in ("native", "views")
        }
        r = judge(q, datasets, tables, runs["views"], runs["native"], args.timeout)
        results.append(r)
        print(
            f" views {_s(r.views.median_s, r.views.status)}, native {_s(r.native.median_s, r.native.status)}: "
            f"{r.verdict}",
            file=sys.stderr,
        )
        for e in (r.views, r.native):
            if e.error:
                print(f"    {e.engine}: {e.error}", file=sys.stderr)
        if r.rows_match is False:
            print(
                f"\n!!!!! RESULT MISMATCH in {q.name}: views and native tables return different rows !!!!!\n"
                f"    views  ({len(r.views.rows)} rows): {canonical_rows(r.views.rows)[:10]}\n"
                f"    native ({len(r.native.rows)} rows): {canonical_rows(r.native.rows)[:10]}\n",
                file=sys.stderr,
            )

    print()
    print_table(results, args.timeout)
    summary = summarize(results)
    print_summary(summary)
    mismatches = summary["mismatches"]
    if mismatches:
        print(f"\n!!!!! RESULT MISMATCH: {', '.join(mismatches)} !!!!!")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "cohort_queries",
        "machine": machine_info(catalog, config, args),
        "targets": {"ratio_max": TARGET_RATIO, "views_warm_s_max": TARGET_VIEWS_S, "peak_mb_max": TARGET_PEAK_MB},
        "summary": summary,
        "queries": [_jsonable(r) for r in results],
    }
    args.out.write_text(json.dumps(payload, indent=2, default=str))
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0 if summary["meet_all_targets"] == len(results) else 3  # 3: ran, a target missed


def _jsonable(r: QueryResult) -> dict:
    d = asdict(r)
    result = next((e.rows for e in (r.native, r.views) if e.rows is not None), None)
    d["result"] = [list(row) for row in canonical_rows(result)][:50] if result is not None else None
    for engine in ("views", "native"):
        rows = d[engine].pop("rows")
        if r.rows_match is False and rows is not None:  # keep both sides of a mismatch
            d[engine]["result"] = [list(row) for row in canonical_rows(rows)][:50]
    return d


if __name__ == "__main__":
    sys.exit(main())
