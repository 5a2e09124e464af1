"""label_agreement against agreement recomputed here from the raw label files, with textbook formulas.

Three label sets go through the real gated ingest: the MIMIC-CXR sample (CheXpert, NegBio and the
radiologist test-set labels, per study), the NIH images the Google 2019 radiologists re-read (NIH's
positives-only NLP labels against the panel's YES/NO) and the first VinDr-CXR images (three readers
each, Fleiss' kappa). The expected tables are built with the csv and gzip modules from the files the
adapters read, and the harmonized findings from the vocabulary CSVs, never from the warehouse.
"""

from __future__ import annotations

import csv
import gzip
import math
from collections import defaultdict
from pathlib import Path

import pytest

from warehouse import Warehouse
from warehouse.samples.mimic_cxr import write_samples

from .conftest import make_settings
from .test_derived_recount import finding

VOCAB = Path(__file__).parents[1] / "warehouse" / "vocab"
Z = 1.959963984540054
VINDR_IMAGES = 1500
COLUMNS = (
    "unit",
    "labeler_a",
    "labeler_b",
    "finding",
    "n",
    "tp",
    "fp",
    "fn",
    "tn",
    "prevalence_a",
    "prevalence_b",
    "kappa",
    "mcc",
    "f1",
    "n_excluded_uncertain",
)


def parents() -> dict[str, str | None]:
    with open(VOCAB / "findings.csv", newline="") as f:
        return {r["finding"]: r["parent"] or None for r in csv.DictReader(f)}


TREE = parents()


def below(ancestor: str) -> set[str]:
    """The finding and every finding whose chain of parents reaches it."""
    out = set()
    for f in TREE:
        node = f
        while node is not None:
            if node == ancestor:
                out.add(f)
                break
            node = TREE[node]
    return out


def gz_dicts(path: Path) -> list[dict[str, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as f:
        return list(csv.DictReader(f))


# --- a labeler's labels as {unit: {raw finding: value}} -------------------------------------------
def chexpert_style(rows: list[dict[str, str]], labeler: str, ids: int) -> dict[str, dict[str, list[int]]]:
    """A CheXpert-format CSV (ids first, then one column per label: 1.0 / 0.0 / -1.0 / blank)."""
    out: dict[str, dict[str, list[int]]] = {}
    for r in rows:
        cells = list(r.items())
        stated = {k: int(float(v)) for k, v in cells[ids:] if v.strip() != ""}
        if not r["study_id"] or not stated:
            continue
        unit = out.setdefault(r["study_id"], defaultdict(list))
        for raw, value in stated.items():
            if finding(raw, labeler):
                unit[finding(raw, labeler)].append(value)
    return out


def combine(values: list[int]) -> int:
    return 1 if 1 in values else -1 if -1 in values else 0


def side_value(side: dict, direct: set[str], unit: str, f: str) -> int:
    """The labeler's own rows on f when it names f anywhere, else its rows on the findings below f."""
    if f in direct:
        return combine(side[unit].get(f, []))
    return combine([v for g in below(f) for v in side[unit].get(g, [])])


def expected_pairs(a: dict, b: dict, unit: str, names: tuple[str, str]) -> dict[str, dict]:
    """The documented comparison, written out: shared units, findings both cover, missing = negative."""
    direct = [{f for unit_ in side.values() for f in unit_} for side in (a, b)]
    covers = [{anc for anc in TREE if below(anc) & d} for d in direct]
    shared = set(a) & set(b)
    out = {}
    for f in (covers[0] & covers[1]) & (direct[0] | direct[1]):
        cells = defaultdict(int)
        excluded = 0
        for u in shared:
            va, vb = side_value(a, direct[0], u, f), side_value(b, direct[1], u, f)
            if -1 in (va, vb):
                excluded += 1
                continue
            cells[(va, vb)] += 1
        tp, fp, fn, tn = cells[(1, 1)], cells[(1, 0)], cells[(0, 1)], cells[(0, 0)]
        n = tp + fp + fn + tn
        if n == 0:  # every shared unit uncertain: no row
            continue
        pa, pb = (tp + fp) / n, (tp + fn) / n
        po, pe = (tp + tn) / n, pa * pb + (1 - pa) * (1 - pb)
        margins = (tp + fp) * (fn + tn) * (tp + fn) * (fp + tn)
        out[f] = {
            "unit": unit,
            "labeler_a": names[0],
            "labeler_b": names[1],
            "finding": f,
            "n": n,
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "tn": tn,
            "prevalence_a": pa,
            "prevalence_b": pb,
            "kappa": (po - pe) / (1 - pe) if pe < 1 else None,
            "mcc": (tp * tn - fp * fn) / math.sqrt(margins) if margins else None,
            "f1": 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else None,
            "n_excluded_uncertain": excluded,
        }
    return out


def assert_agreement(wh: Warehouse, dataset: str, a: str, b: str, expected: dict[str, dict]) -> list[dict]:
    got = wh.sql(
        "SELECT * FROM label_agreement WHERE dataset = $d AND statistic = 'cohen' "
        "AND labeler_a = $a AND labeler_b = $b",
        {"d": dataset, "a": a, "b": b},
    ).to_pylist()
    assert {r["finding"] for r in got} == set(expected), f"{dataset} {a} vs {b}: findings compared"
    for r in got:
        want = expected[r["finding"]]
        for column in COLUMNS:
            if isinstance(want[column], float):
                assert r[column] == pytest.approx(want[column], abs=1e-12), (a, b, r["finding"], column)
            else:
                assert r[column] == want[column], (a, b, r["finding"], column)
    return got


def disagree(path: Path) -> None:
    """Flip NegBio's first stated 1.0 / 0.0 on every fifth study: the sample's labelers only differ on
    uncertainty, which the comparison leaves out, so this makes disagreements to count."""
    with gzip.open(path, "rt", newline="") as f:
        rows = list(csv.reader(f))
    for row in rows[1::5]:
        for i in range(2, len(row)):
            if row[i] in ("1.0", "0.0"):
                row[i] = {"1.0": "0.0", "0.0": "1.0"}[row[i]]
                break
    with gzip.open(path, "wt", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def raw(tmp_path_factory, public_data) -> dict[str, Path]:
    """Small source folders: the Google-read NIH images, the first VinDr images, the MIMIC-CXR sample."""
    root = tmp_path_factory.mktemp("agreement-raw")
    public = Path(public_data.root)
    nih = root / "nih_cxr14"
    nih.mkdir()
    google = public / "nih_cxr14" / "google2019_nih-chest-xray-labels.csv.gz"
    with gzip.open(google, "rt", newline="") as f:
        text = f.read()
    (nih / "google2019_nih-chest-xray-labels.csv").write_text(text)
    read = {line.split(",", 1)[0] for line in text.splitlines()[1:]}
    with gzip.open(public / "nih_cxr14" / "Data_Entry_2017_v2020.csv.gz", "rt", newline="") as f:
        lines = [line for i, line in enumerate(f) if i == 0 or line.split(",", 1)[0] in read]
    (nih / "Data_Entry_2017_v2020.csv").write_text("".join(lines))
    (nih / "BBox_List_2017.csv").write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n")
    vindr = root / "vindr_cxr"
    vindr.mkdir()
    with gzip.open(public / "vindr_cxr" / "train.csv.gz", "rt", newline="") as f:
        header, *lines = f.readlines()
    first = list(dict.fromkeys(line.split(",", 1)[0] for line in lines))[:VINDR_IMAGES]
    kept = set(first)
    (vindr / "train.csv").write_text(header + "".join(line for line in lines if line.split(",", 1)[0] in kept))
    write_samples(root / "mimic_cxr", patients=60, seed=3)
    disagree(root / "mimic_cxr" / "mimic-cxr-2.0.0-negbio.csv.gz")
    return {"nih_cxr14": nih, "vindr_cxr": vindr, "mimic_cxr": root / "mimic_cxr"}


@pytest.fixture(scope="module")
def wh(tmp_path_factory, cache_dir, raw) -> Warehouse:
    warehouse = Warehouse(make_settings(tmp_path_factory.mktemp("agreement-wh"), cache_dir, **raw))
    warehouse.ingest(list(raw), say=lambda m: None)
    return warehouse


# --- tests ---------------------------------------------------------------------------------------
def test_mimic_chexpert_negbio_and_radiologist_equal_recount(wh, raw):
    folder = raw["mimic_cxr"]
    sets = {
        "chexpert": chexpert_style(gz_dicts(folder / "mimic-cxr-2.0.0-chexpert.csv.gz"), "chexpert", 2),
        "negbio": chexpert_style(gz_dicts(folder / "mimic-cxr-2.0.0-negbio.csv.gz"), "negbio", 2),
        "radiologist": chexpert_style(gz_dicts(folder / "mimic-cxr-2.1.0-test-set-labeled.csv"), "radiologist", 1),
    }
    got = assert_agreement(
        wh,
        "mimic_cxr",
        "chexpert",
        "negbio",
        expected_pairs(sets["chexpert"], sets["negbio"], "study", ("chexpert", "negbio")),
    )
    assert len(got) == 14 and sum(r["n_excluded_uncertain"] for r in got) > 0  # the sample has uncertain labels
    assert sum(r["kappa_low"] is not None for r in got) >= 5  # and (made) disagreements
    for other in ("chexpert", "negbio"):
        assert_agreement(
            wh,
            "mimic_cxr",
            other,
            "radiologist",
            expected_pairs(sets[other], sets["radiologist"], "study", (other, "radiologist")),
        )


def test_nih_labels_against_the_google_radiologists_equal_recount(wh, raw):
    nih, google = {}, {}
    for r in gz_dicts(raw["nih_cxr14"] / "Data_Entry_2017_v2020.csv"):
        unit = nih.setdefault(r["Image Index"].removesuffix(".png"), defaultdict(list))
        for raw_label in r["Finding Labels"].split("|"):
            if finding(raw_label, "nih_nlp"):
                unit[finding(raw_label, "nih_nlp")].append(1)
    for r in gz_dicts(raw["nih_cxr14"] / "google2019_nih-chest-xray-labels.csv"):
        image = r["Image Index"].removesuffix(".png")
        if image in google or image not in nih:
            continue
        google[image] = defaultdict(list)
        for raw_label in ("Fracture", "Pneumothorax", "Airspace opacity", "Nodule or mass"):
            google[image][finding(raw_label, "radiologist")].append({"YES": 1, "NO": 0}[r[raw_label]])
    expected = expected_pairs(nih, google, "image", ("nih_nlp", "radiologist"))
    # NIH names no fracture; it is read through nodule and mass for Google's nodule-or-mass
    assert set(expected) == {"pneumothorax", "lung_lesion", "lung_opacity"}
    got = assert_agreement(wh, "nih_cxr14", "nih_nlp", "radiologist", expected)
    assert all(r["n"] == len(google) for r in got)


def fleiss(counts: list[int], m: int) -> float:
    """Fleiss (1971) for two categories: x of m readers positive on each unit."""
    n = len(counts)
    p_i = [(x * x + (m - x) * (m - x) - m) / (m * (m - 1)) for x in counts]
    p = sum(counts) / (n * m)
    p_e = p * p + (1 - p) * (1 - p)
    return (sum(p_i) / n - p_e) / (1 - p_e)


def test_vindr_readers_fleiss_kappa_equals_recount(wh, raw):
    readers: dict[str, set] = defaultdict(set)
    positive: dict[tuple[str, str], set] = defaultdict(set)
    for r in gz_dicts(raw["vindr_cxr"] / "train.csv"):
        readers[r["image_id"]].add(r["rad_id"])
        if finding(r["class_name"], "radiologist"):
            positive[(r["image_id"], finding(r["class_name"], "radiologist"))].add(r["rad_id"])
    assert len(readers) == VINDR_IMAGES and {len(s) for s in readers.values()} == {3}
    got = {
        r["finding"]: r
        for r in wh.sql(
            "SELECT * FROM label_agreement WHERE dataset = 'vindr_cxr' AND statistic = 'fleiss'"
        ).to_pylist()
    }
    assert set(got) == {f for _, f in positive}
    for f, r in got.items():
        counts = [len(positive.get((image, f), ())) for image in readers]
        assert (r["unit"], r["labeler_a"], r["labeler_b"], r["n"], r["n_readers"]) == (
            "image",
            "radiologist",
            None,
            VINDR_IMAGES,
            3,
        )
        assert r["prevalence_a"] == pytest.approx(sum(counts) / (3 * len(counts)), abs=1e-12)
        expected = fleiss(counts, 3) if 0 < sum(counts) < 3 * len(counts) else None
        assert r["kappa"] == pytest.approx(expected, abs=1e-12), f
        assert r["mcc"] is None and r["f1"] is None
    # the jackknife interval of one finding, leaving each image out in turn
    f = "cardiomegaly"
    counts = [len(positive.get((image, f), ())) for image in readers]
    loo = [fleiss(counts[:i] + counts[i + 1 :], 3) for i in range(len(counts))]
    mean = sum(loo) / len(loo)
    se = math.sqrt((len(loo) - 1) / len(loo) * sum((k - mean) ** 2 for k in loo))
    assert got[f]["kappa_low"] == pytest.approx(got[f]["kappa"] - Z * se, abs=1e-9)
    assert got[f]["kappa_high"] == pytest.approx(got[f]["kappa"] + Z * se, abs=1e-9)


def fce_variance(table: list[list[float]]) -> float:
    """Fleiss, Cohen & Everitt (1969) large-sample variance of kappa for a k x k table of counts."""
    n = sum(map(sum, table))
    p = [[c / n for c in row] for row in table]
    k = len(p)
    row = [sum(p[i]) for i in range(k)]
    col = [sum(p[i][j] for i in range(k)) for j in range(k)]
    po = sum(p[i][i] for i in range(k))
    pe = sum(row[i] * col[i] for i in range(k))
    diagonal = sum(p[i][i] * ((1 - pe) - (col[i] + row[i]) * (1 - po)) ** 2 for i in range(k))
    off = (1 - po) ** 2 * sum(p[i][j] * (col[i] + row[j]) ** 2 for i in range(k) for j in range(k) if i != j)
    return (diagonal + off - (po * pe - 2 * pe + po) ** 2) / (n * (1 - pe) ** 4)


def test_intervals_bracket_the_estimates_and_follow_the_documented_formulas(wh):
    rows = wh.sql("SELECT * FROM label_agreement WHERE dataset IN ('mimic_cxr', 'nih_cxr14', 'vindr_cxr')").to_pylist()
    assert {r["dataset"] for r in rows} == {"mimic_cxr", "nih_cxr14", "vindr_cxr"}
    bounded = 0
    for r in rows:
        for s in ("kappa", "mcc", "f1"):
            low, high = r[f"{s}_low"], r[f"{s}_high"]
            assert (low is None) == (high is None), (r["finding"], s)
            if low is not None:
                assert low <= r[s] <= high, (r["dataset"], r["finding"], s)
                bounded += 1
        if r["n"] < 4:
            assert r["kappa_low"] is r["mcc_low"] is r["f1_low"] is None
    assert bounded > 20
    r = next(r for r in rows if r["dataset"] == "nih_cxr14" and r["finding"] == "pneumothorax")
    se = math.sqrt(fce_variance([[r["tp"], r["fp"]], [r["fn"], r["tn"]]]))
    assert (r["kappa_low"], r["kappa_high"]) == pytest.approx((r["kappa"] - Z * se, r["kappa"] + Z * se), abs=1e-12)
    z, half = math.atanh(r["mcc"]), Z / math.sqrt(r["n"] - 3)
    assert (r["mcc_low"], r["mcc_high"]) == pytest.approx((math.tanh(z - half), math.tanh(z + half)), abs=1e-12)
    # F1 as a ratio of multinomial counts: numerical delta method, not the closed form the SQL uses
    n, tp, fp, fn = r["n"], r["tp"], r["fp"], r["fn"]

    def f1(a, b, c):
        return 2 * a / (2 * a + b + c)

    h = 1e-6
    grad = [(f1(tp + h * (i == 0), fp + h * (i == 1), fn + h * (i == 2)) - f1(tp, fp, fn)) / h * n for i in range(3)]
    probs = [tp / n, fp / n, fn / n]
    var = (sum(g * g * p for g, p in zip(grad, probs)) - sum(g * p for g, p in zip(grad, probs)) ** 2) / n
    assert r["f1_low"] == pytest.approx(r["f1"] - Z * math.sqrt(var), abs=1e-5)


def test_label_agreement_is_catalogued_with_a_version_per_dataset(wh):
    described = wh.sql(
        "SELECT column_name, description FROM catalog_columns WHERE table_name = 'label_agreement'"
    ).to_pylist()
    assert {"kappa_low", "mcc", "f1_high", "n_excluded_uncertain"} <= {r["column_name"] for r in described}
    assert all(r["description"] for r in described)
    versions = wh.sql("SELECT delta_versions FROM catalog_tables WHERE table_name = 'label_agreement'").to_pylist()
    assert set(dict(versions[0]["delta_versions"])) == {"mimic_cxr", "nih_cxr14", "vindr_cxr"}


def test_matching_rules_on_hand_made_labels():
    """Method sets, the linked dataset, missing = negative, uncertain left out, reading through findings below."""
    import duckdb
    import pyarrow as pa

    from warehouse import findings, stats

    rows = [  # dataset, image, finding, raw label, value, labeler, method
        ("base", "i1", "pleural_effusion", "Pleural Effusion", 1, "chexpert", None),
        ("base", "i2", "pleural_effusion", "Pleural Effusion", 0, "chexpert", None),
        ("base", "i3", "pleural_effusion", "Pleural Effusion", -1, "chexpert", None),
        ("base", "i4", "cardiomegaly", "Cardiomegaly", 0, "chexpert", None),
        ("base", "i5", "pleural_effusion", "Pleural Effusion", 1, "chexpert", None),
        ("plus", "i1", "pleural_effusion", "Pleural Effusion", 1, "chexbert", "report"),
        ("plus", "i1", "pleural_effusion", "Pleural Effusion", 1, "chexbert", "findings"),
        ("plus", "i2", "pleural_effusion", "Pleural Effusion", 1, "chexbert", "report"),
        ("plus", "i3", "pleural_effusion", "Pleural Effusion", 0, "chexbert", "report"),
        ("plus", "i4", "pleural_effusion", "Pleural Effusion", 1, "chexbert", "report"),
        ("plus", "i5", "lung_lesion", "Lung Lesion", 1, "chexbert", "report"),
        ("plus", "i6", "pleural_effusion", "Pleural Effusion", 1, "chexbert", "report"),
        ("plus", "i1", "nodule", "Nodule", 1, "nih_nlp", "x"),
        ("plus", "i2", "mass", "Mass", 1, "nih_nlp", "y"),
        ("plus", "i3", "no_finding", "No Finding", 1, "nih_nlp", "x"),
        ("plus", "i1", "lung_lesion", "Nodule or mass", 1, "radiologist", None),
        ("plus", "i2", "lung_lesion", "Nodule or mass", 0, "radiologist", None),
        ("plus", "i3", "lung_lesion", "Nodule or mass", 0, "radiologist", None),
    ]
    names = ("dataset", "image_id", "finding", "raw_label", "value", "labeler", "method")
    table = pa.Table.from_pylist(
        [dict(zip(names, r)) | {"study_id": "s" + r[1], "reader": None} for r in rows],
        schema=pa.schema(
            [
                ("dataset", pa.string()),
                ("study_id", pa.string()),
                ("image_id", pa.string()),
                ("finding", pa.string()),
                ("raw_label", pa.string()),
                ("value", pa.int8()),
                ("labeler", pa.string()),
                ("method", pa.string()),
                ("reader", pa.string()),
            ]
        ),
    )
    con = duckdb.connect()
    con.register("labels", table)
    con.register("finding_hierarchy", findings.hierarchy().to_arrow())
    got = stats.compute(con, "label_agreement", "plus", "base").to_pylist()
    assert {r["dataset"] for r in got} == {"plus"}
    by = {(r["labeler_a"], r["method_a"], r["labeler_b"], r["dataset_b"], r["finding"]): r for r in got}
    report = by[("chexbert", "report", "chexpert", "base", "pleural_effusion")]
    # i1 both; i2 and i4 chexbert only (chexpert: 0, and no row on i4); i5 chexpert only; i3 uncertain; i6 unshared
    assert (
        report["unit"],
        report["n"],
        report["tp"],
        report["fp"],
        report["fn"],
        report["tn"],
        report["n_excluded_uncertain"],
    ) == ("image", 4, 1, 2, 1, 0, 1)
    # by hand: po 1/4, pa 3/4, pb 2/4, pe 1/2
    assert (report["kappa"], report["mcc"], report["f1"]) == pytest.approx((-0.5, -2 / math.sqrt(12), 0.4))
    only_i1 = by[("chexbert", "findings", "chexpert", "base", "pleural_effusion")]
    assert (only_i1["n"], only_i1["tp"], only_i1["kappa_low"], only_i1["f1_low"]) == (1, 1, None, None)
    assert not any(k[4] in ("cardiomegaly", "lung_lesion") and k[2] == "chexpert" for k in by)  # one side only
    rolled = by[("nih_nlp", None, "radiologist", "plus", "lung_lesion")]  # x / y qualify, do not split
    assert (rolled["n"], rolled["tp"], rolled["fp"], rolled["fn"], rolled["tn"]) == (3, 1, 1, 0, 1)
    assert {k[4] for k in by if k[:2] == ("nih_nlp", None) and k[2] == "radiologist"} == {"lung_lesion"}
