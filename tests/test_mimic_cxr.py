"""The MIMIC-CXR adapter against the sample generator's truth and raw files re-read here.

Expected numbers come from the generator's truth dict (counted while writing, independently of
the adapter) or from the raw files read with csv / gzip / zipfile in this file.
"""

from __future__ import annotations

import csv
import gzip
import re
import shutil
import struct
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

import polars as pl
import pytest

from warehouse import Warehouse
from warehouse.samples.mimic_cxr import write_samples
from warehouse.sources import get_adapter
from warehouse.sources.base import SourceError, SourceFolder
from warehouse.sources.mimic_reports import sections

from .conftest import make_settings
from .test_emitted_columns import ethnicity_of_mixed, race

PATIENTS, SEED = 60, 3
SPLIT_NAMES = {"train": "train", "validate": "valid", "test": "test"}
ZIP = "mimic-cxr-reports.zip"


def read_all(folder: Path):
    """Run the adapter and gather its streamed batches into whole tables."""
    result = get_adapter("mimic_cxr").read(SourceFolder(str(folder)))
    tables = dict(result.tables)
    for name, frame in result.batches or ():
        tables[name] = pl.concat([tables[name], frame]) if name in tables else frame
    return tables, result


def gz_rows(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def zip_texts(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist() if not info.is_dir()}


def report_name(subject_id, study_id) -> str:
    return f"files/p{str(subject_id)[:2]}/p{subject_id}/s{study_id}.txt"


def rewrite_zip(source: Path, target: Path, replace: dict[str, bytes]) -> None:
    """Copy a zip member by member, swapping the content of the members named in `replace`."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            new.writestr(info, replace.get(info.filename, old.read(info)))


def copy_without(root: Path, target: Path, *skip: str) -> Path:
    shutil.copytree(root, target, ignore=lambda folder, names: [n for n in names if n in skip])
    return target


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("mimic_cxr")
    return root, write_samples(root, patients=PATIENTS, seed=SEED, extract_reports=True)


@pytest.fixture(scope="module")
def read(sample):
    root, _ = sample
    return read_all(root)


@pytest.fixture(scope="module")
def tables(read):
    return read[0]


# --- rows per table and split ---------------------------------------------------------------------


def test_counts_per_split_match_truth(sample, tables):
    _, truth = sample
    for mimic_name, split in SPLIT_NAMES.items():
        images = tables["images"].filter(pl.col("split") == split)
        studies = tables["studies"].filter(pl.col("split") == split)
        assert images.height == truth["images_per_split"][mimic_name], split
        assert studies.height == truth["studies_per_split"][mimic_name], split
        assert studies["patient_id"].n_unique() == truth["patients_per_split"][mimic_name], split
    assert (tables["patients"].height, tables["studies"].height, tables["images"].height) == (
        truth["patients"],
        truth["studies"],
        truth["images"],
    )
    views = Counter(tables["images"]["view_source"].fill_null("").to_list())
    assert views == Counter(truth["view_positions"])


def test_ids_are_kept_as_written(sample, tables):
    root, _ = sample
    metadata = gz_rows(root / "mimic-cxr-2.0.0-metadata.csv.gz")
    first = metadata[0]
    image = tables["images"].filter(pl.col("image_id") == first["dicom_id"]).row(0, named=True)
    assert (image["study_id"], image["patient_id"]) == (first["study_id"], first["subject_id"])
    assert (image["width"], image["height"]) == (int(first["Columns"]), int(first["Rows"]))
    assert (
        image["path"] == f"files/p{first['subject_id'][:2]}/p{first['subject_id']}/s{first['study_id']}/"
        f"{first['dicom_id']}.jpg"
    )
    study = tables["studies"].filter(pl.col("study_id") == first["study_id"]).row(0, named=True)
    assert study["study_date"].strftime("%Y%m%d") == first["StudyDate"]


def test_joins_keys_and_no_patient_in_two_splits(tables):
    images, studies, patients, reports, labels = (
        tables[n] for n in ("images", "studies", "patients", "reports", "labels")
    )
    assert images.join(studies, on=["study_id", "patient_id", "split"], how="anti").is_empty()
    assert studies.join(patients, on="patient_id", how="anti").is_empty()
    assert reports.join(studies, on=["study_id", "patient_id"], how="anti").is_empty()
    assert labels.join(studies, on="study_id", how="anti").is_empty()
    for frame, key in (
        (images, ["image_id"]),
        (studies, ["study_id"]),
        (patients, ["patient_id"]),
        (reports, ["study_id"]),
        (labels, ["study_id", "image_id", "labeler", "raw_label"]),
    ):
        assert not frame.select(key).is_duplicated().any(), key
    assert studies.group_by("patient_id").agg(pl.col("split").n_unique()).filter(pl.col("split") > 1).is_empty()
    assert set(images["view_position"]) <= {"PA", "AP", "LATERAL", "LL", "UNKNOWN", "OTHER"}


# --- labels ------------------------------------------------------------------------------------------


def test_label_counts_per_labeler_match_truth(sample, tables):
    _, truth = sample
    labels = tables["labels"]
    assert labels["image_id"].is_null().all()
    for labeler, truth_name in (("chexpert", "chexpert"), ("negbio", "negbio"), ("radiologist", "test_set_labeled")):
        own = labels.filter(pl.col("labeler") == labeler)
        positives = dict(own.filter(pl.col("value") == 1).group_by("raw_label").len().iter_rows())
        uncertain = dict(own.filter(pl.col("value") == -1).group_by("raw_label").len().iter_rows())
        assert {k: v for k, v in truth["positives"][truth_name].items() if v} == positives, labeler
        assert {k: v for k, v in truth["uncertain"][truth_name].items() if v} == uncertain, labeler
        assert own["study_id"].n_unique() == truth[f"{truth_name}_rows"], labeler
    opacity = labels.filter(pl.col("raw_label") == "Airspace Opacity")
    assert not opacity.is_empty() and set(opacity["finding"]) == {"lung_opacity"}
    assert set(labels.filter(pl.col("labeler") == "radiologist")["study_id"]) <= set(
        tables["studies"].filter(pl.col("split") == "test")["study_id"]
    )


def test_studies_without_label_rows_match_truth(sample, tables):
    _, truth = sample
    labelled = set(tables["labels"]["study_id"])
    unlabelled = set(tables["studies"]["study_id"]) - labelled
    assert unlabelled == {str(study) for _, study in truth["studies_without_label_rows"]} != set()
    chexpert = set(tables["labels"].filter(pl.col("labeler") == "chexpert")["study_id"])
    negbio = set(tables["labels"].filter(pl.col("labeler") == "negbio")["study_id"])
    assert negbio - chexpert == {str(study) for _, study in truth["studies_without_chexpert_row"]}


def test_label_columns_are_joined_by_name(sample, tables, tmp_path):
    root, _ = sample
    folder = copy_without(root, tmp_path / "shuffled", "files", ZIP, "mimiciv")
    name = "mimic-cxr-2.0.0-chexpert.csv.gz"
    rows = gz_rows(root / name)
    columns = list(rows[0])[::-1]  # every label column in another place
    with gzip.open(folder / name, "wt", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    shuffled, _ = read_all(folder)
    key = ["study_id", "raw_label", "labeler", "value"]
    assert shuffled["labels"].sort(key).select(key).equals(tables["labels"].sort(key).select(key))

    with gzip.open(folder / name, "wt", encoding="utf-8", newline="") as handle:
        handle.write(",".join(columns).replace("Edema", "Oedema") + "\n")
    with pytest.raises(SourceError, match=r"(?s)chexpert\.csv\.gz, line 1: .*found: .*Oedema"):
        read_all(folder)


# --- reports -----------------------------------------------------------------------------------------


def test_report_sections_match_truth(sample, tables):
    root, truth = sample
    reports = tables["reports"]
    assert reports.height == truth["reports"]
    assert reports["impression"].is_not_null().sum() == truth["reports_with_impression"]
    assert reports["findings"].is_not_null().sum() == truth["reports_with_findings"]
    only = lambda have, lack: reports.filter(pl.col(have).is_not_null() & pl.col(lack).is_null()).height
    assert only("impression", "findings") == truth["reports_impression_only"]
    assert only("findings", "impression") == truth["reports_findings_only"]
    neither = reports.filter(pl.col("findings").is_null() & pl.col("impression").is_null()).height
    assert neither == truth["reports_with_neither_findings_nor_impression"]
    raw = zip_texts(root / ZIP)
    assert dict(zip(reports["source_file"], reports["full_text"])) == {
        f"{ZIP}:{name}": data.decode("utf-8") for name, data in raw.items()
    }
    assert (reports["tokens_impression"] == reports["impression"].str.split(" ").list.len()).all()
    assert set(reports["language"]) == {"en"}


def test_odd_reports_keep_full_text_and_null_sections(sample, tables):
    _, truth = sample
    reports = tables["reports"]
    by_study = {row["study_id"]: row for row in reports.iter_rows(named=True)}
    for _, study in truth["studies_without_label_rows"]:  # only EXAMINATION / INDICATION / COMPARISON
        row = by_study[str(study)]
        assert row["findings"] is None and row["impression"] is None and row["tokens_findings"] is None
        assert row["indication"] and "INDICATION:" in row["full_text"]
    for _, study in truth["reports_misspelled_impression_header"]:
        assert "IMPRESSON:" in by_study[str(study)]["full_text"] and by_study[str(study)]["impression"]
    for _, study in truth["reports_with_addendum"]:
        row = by_study[str(study)]
        addendum, report = row["full_text"].split("_" * 20, 1)
        assert "FINAL ADDENDUM" in addendum and "FINAL REPORT" in report
        first_words = " ".join(addendum.split()[2:8])  # after the FINAL ADDENDUM title
        assert all(first_words not in (row[s] or "") for s in ("indication", "comparison", "findings", "impression"))


@pytest.mark.parametrize(
    "report, expected",
    [
        ("plain text, no header at all\n more text\n", {}),
        (" FINDINGS:  Lungs clear.\n", {"findings": "Lungs clear."}),  # header on the first line
        (
            "\n CHEST, PA AND LATERAL: \n \n Heart normal.\n \n IMPRESSION:  Normal.\n",
            {"findings": "Heart normal.", "impression": "Normal."},
        ),
        (
            "\n CLINICAL HISTORY:  Cough.\n FINDINGS AND IMPRESSION:  No acute process.\n",
            {"indication": "Cough.", "impression": "No acute process."},
        ),
        (
            "\n REASON FOR EXAMINATION:  Fever.\n COMPARISONS:  None.\n CONCLUSION:  Clear.\n TECHNIQUE:  PA.\n",
            {"indication": "Fever.", "comparison": "None.", "impression": "Clear."},
        ),
        ("\n FINDINGS: \n \n IMPRESSION: \n \n", {}),  # headers without text
        (
            "\n IMPRESSION:  Effusion.\n \n ____________________________________\n"
            "                                 FINAL ADDENDUM\n IMPRESSION:  Called Dr. ___.\n",
            {"impression": "Effusion."},
        ),
        (
            "                                 FINAL ADDENDUM\n IMPRESSION:  Revised.\n ______________________________\n"
            " FINDINGS:  Clear.\n",
            {"findings": "Clear."},
        ),  # addendum first, report untitled
    ],
)
def test_sectioner_on_odd_reports(report, expected):
    assert sections(report) == {s: expected.get(s) for s in ("indication", "comparison", "findings", "impression")}


def test_zip_and_extracted_tree_give_identical_tables(sample, tables, tmp_path):
    root, _ = sample
    tree_tables, result = read_all(copy_without(root, tmp_path / "tree", ZIP))
    assert sum(name.endswith(".txt") for name in result.files_read) == tables["reports"].height
    for name in ("patients", "studies", "images", "labels"):
        assert tree_tables[name].equals(tables[name]), name
    from_zip = tables["reports"].sort("study_id")
    from_tree = tree_tables["reports"].sort("study_id")
    assert from_tree.drop("source_file").equals(from_zip.drop("source_file"))
    assert (ZIP + ":" + from_tree["source_file"]).to_list() == from_zip["source_file"].to_list()


def _corrupt_member(path: Path, member: str) -> None:
    """Flip bytes in the middle of one member's compressed data (its CRC then fails)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    data = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_length + extra_length
    for offset in range(start + info.compress_size // 3, start + info.compress_size // 3 + 8):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_unreadable_members_are_quarantined_by_name(sample, tmp_path):
    root, truth = sample
    folder = copy_without(root, tmp_path / "bad", "files", ZIP)
    names = sorted(zip_texts(root / ZIP))
    latin1, corrupt = names[1], names[2]
    rewrite_zip(root / ZIP, folder / ZIP, {latin1: "Pleural effusion \u2013 café".encode("latin-1", "replace")})
    _corrupt_member(folder / ZIP, corrupt)
    tables, result = read_all(folder)
    rejected = {row["source_file"]: row for row in result.rejected().to_dicts()}
    assert set(rejected) == {f"{folder}/{ZIP}:{latin1}", f"{folder}/{ZIP}:{corrupt}"}
    assert "not UTF-8" in rejected[f"{folder}/{ZIP}:{latin1}"]["reason"]
    assert "caf" in rejected[f"{folder}/{ZIP}:{latin1}"]["raw_record"]
    assert "cannot be read" in rejected[f"{folder}/{ZIP}:{corrupt}"]["reason"]
    assert tables["reports"].height == truth["reports"] - 2
    assert not {f"{ZIP}:{latin1}", f"{ZIP}:{corrupt}"} & set(tables["reports"]["source_file"])
    assert any("2 unreadable" in note for note in result.notes)


def test_a_file_that_is_not_a_zip_is_named(sample, tmp_path):
    root, _ = sample
    folder = copy_without(root, tmp_path / "notzip", "files", ZIP)
    (folder / ZIP).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(SourceError, match=r"mimic-cxr-reports\.zip: is not a readable zip"):
        get_adapter("mimic_cxr").read(SourceFolder(str(folder)))  # before any batch is asked for


def test_bad_values_are_quarantined_with_line_and_column(sample, tmp_path):
    root, truth = sample
    folder = copy_without(root, tmp_path / "badmeta", "files", ZIP, "mimiciv")
    name = "mimic-cxr-2.0.0-metadata.csv.gz"
    with gzip.open(root / name, "rt", encoding="utf-8", newline="") as handle:
        lines = handle.readlines()
    fields = lines[3].split(",")
    bad_date_image = fields[0]
    lines[3] = ",".join(fields[:7] + ["21801345"] + fields[8:])  # record 3: month 13
    fields = lines[5].split(",")
    lines[5] = ",".join(fields[:5] + ["tall"] + fields[6:])  # record 5: Rows is not a number
    with gzip.open(folder / name, "wt", encoding="utf-8", newline="") as handle:
        handle.writelines(lines)
    labels = "mimic-cxr-2.0.0-negbio.csv.gz"
    rows = gz_rows(root / labels)
    rows[0]["Edema"], rows[1]["Edema"] = "0.5", "2.0"  # unstorable / stored for the checks
    with gzip.open(folder / labels, "wt", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    tables, result = read_all(folder)
    rejected = {(r["line_number"], r["column_name"]): r for r in result.rejected().to_dicts()}
    assert set(rejected) == {(4, "StudyDate"), (6, "Rows"), (2, "Edema")}
    assert rejected[(2, "Edema")]["value"] == "0.5" and rejected[(2, "Edema")]["source_file"].endswith(labels)
    edema = tables["labels"].filter((pl.col("labeler") == "negbio") & (pl.col("raw_label") == "Edema"))
    assert edema.filter(pl.col("study_id") == rows[1]["study_id"])["value"].to_list() == [2]
    assert edema.filter(pl.col("study_id") == rows[0]["study_id"]).is_empty()
    assert rejected[(4, "StudyDate")]["value"] == "21801345" and rejected[(6, "Rows")]["value"] == "tall"
    assert rejected[(4, "StudyDate")]["source_file"] == rejected[(6, "Rows")]["source_file"] == f"{folder}/{name}"
    assert tables["images"].height == truth["images"] - 1
    assert bad_date_image in set(tables["images"]["image_id"])


def test_missing_metadata_is_named(tmp_path):
    with pytest.raises(SourceError, match=r"mimic-cxr-2\.0\.0-metadata\.csv\[\.gz\]"):
        read_all(tmp_path)


# --- MIMIC-IV demographics -------------------------------------------------------------------------


def _expected_race(admissions: list[dict]) -> dict[str, str]:
    """The documented rule, recomputed: most frequent informative race, ties to the latest admission."""
    by_subject = defaultdict(list)
    for row in admissions:
        by_subject[row["subject_id"]].append(row)
    expected = {}
    for subject, rows in by_subject.items():
        counts, last = Counter(r["race"] for r in rows), {}
        for r in rows:
            last[r["race"]] = max(last.get(r["race"], ""), r["admittime"])
        informative = lambda race: race not in ("UNKNOWN", "UNABLE TO OBTAIN", "PATIENT DECLINED TO ANSWER")
        expected[subject] = max(counts, key=lambda race: (informative(race), counts[race], last[race]))
    return expected


def test_demographics_match_truth_and_raw_files(sample, read):
    root, truth = sample
    tables, result = read
    mimic_iv = truth["mimic_iv"]
    patients = tables["patients"]
    linked = patients.filter(pl.col("sex_source").is_not_null())
    assert linked.height == mimic_iv["linked_cxr_patients"]
    assert dict(linked.group_by("sex").len().iter_rows()) == mimic_iv["linked_gender"]
    assert patients.filter(pl.col("sex") == "U").height == mimic_iv["cxr_patients_not_in_mimic_iv"] > 0
    ages = tables["studies"]["age_years"]
    assert (ages.min(), ages.max()) == (mimic_iv["age_at_study_min"], mimic_iv["age_at_study_max"])
    unlinked = set(patients.filter(pl.col("sex") == "U")["patient_id"])
    assert tables["studies"].filter(pl.col("patient_id").is_in(unlinked))["age_years"].is_null().all()

    raw_patients = {r["subject_id"]: r for r in gz_rows(root / "mimiciv/3.1/hosp/patients.csv.gz")}
    for row in linked.iter_rows(named=True):
        raw = raw_patients[row["patient_id"]]
        assert row["birth_year"] == int(raw["anchor_year"]) - int(raw["anchor_age"])
    expected_race = _expected_race(gz_rows(root / "mimiciv/3.1/hosp/admissions.csv.gz"))
    got_race = {k: v for k, v in patients.select("patient_id", "race_source").iter_rows() if v is not None}
    assert got_race == {k: v for k, v in expected_race.items() if k in set(patients["patient_id"])}
    assert len(got_race) == mimic_iv["linked_patients_with_admissions"]
    # harmonized (docs/datasets.md "Race and ethnicity"); no admission: recorded field, nothing said -> unknown
    harmonized = dict(patients.select("patient_id", "race").iter_rows())
    assert harmonized == {p: race(got_race.get(p), mixed=True) for p in patients["patient_id"]}
    assert set(harmonized.values()) <= {
        "white",
        "black",
        "asian",
        "american_indian_alaska_native",
        "native_hawaiian_pacific_islander",
        "other",
        "multiple",
        "unknown",
    }
    ethnicities = dict(patients.select("patient_id", "ethnicity").iter_rows())
    assert ethnicities == {p: ethnicity_of_mixed(got_race.get(p)) for p in patients["patient_id"]}
    n, m = mimic_iv["linked_cxr_patients"], truth["patients"]
    assert any(
        f"MIMIC-IV 3.1 demographics for {100 * n / m:.1f}% of CXR patients ({n} of {m})" in note
        for note in result.notes
    )
    assert any(f"race: {mimic_iv['patients_with_conflicting_race']} of" in note for note in result.notes)


def test_without_mimic_iv_every_patient_is_unknown(tmp_path):
    truth = write_samples(tmp_path, patients=20, seed=5, mimic_iv=False)
    tables, result = read_all(tmp_path)
    assert tables["patients"].height == truth["patients"]
    assert set(tables["patients"]["sex"]) == {"U"} and tables["studies"]["age_years"].is_null().all()
    assert any("no mimiciv/<version>/hosp/patients.csv.gz" in note for note in result.notes)


def test_mimic_iv_1_0_ethnicity_column_is_read(sample, tables, tmp_path):
    root, _ = sample
    folder = copy_without(root, tmp_path / "v1", "files", ZIP, "mimiciv")
    core = folder / "mimiciv/1.0/core"
    core.mkdir(parents=True)
    shutil.copy(root / "mimiciv/3.1/hosp/patients.csv.gz", core / "patients.csv.gz")
    rows = gz_rows(root / "mimiciv/3.1/hosp/admissions.csv.gz")
    columns = [c if c != "race" else "ethnicity" for c in rows[0] if c != "admit_provider_id"]
    with gzip.open(core / "admissions.csv.gz", "wt", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[r["race"] if c == "ethnicity" else r[c] for c in columns] for r in rows])
    v1, result = read_all(folder)
    assert v1["patients"].equals(tables["patients"])
    assert any("`ethnicity` values" in note for note in result.notes)


# --- end to end ----------------------------------------------------------------------------------------


def test_ingest_and_query(sample, cache_dir, tmp_path):
    root, truth = sample
    wh = Warehouse(make_settings(tmp_path, cache_dir, mimic_cxr=root))
    wh.ingest(["mimic_cxr"], say=lambda m: None)
    count = lambda sql: wh.sql(sql).column(0)[0].as_py()
    assert count("SELECT count(*) FROM reports WHERE dataset = 'mimic_cxr'") == truth["reports"]
    assert (
        count("SELECT count(*) FROM images WHERE dataset = 'mimic_cxr' AND split = 'valid'")
        == truth["images_per_split"]["validate"]
    )
    assert count("SELECT rows_rejected FROM ingest_runs") == 0

    impression = re.compile(r"\n (?:IMPRESSION|IMPRESSON|CONCLUSION):\s(.*?)(?=\n [A-Z ()/,-]+:\s|\Z)", re.S)
    expected = set()
    for name, data in zip_texts(root / ZIP).items():
        found = impression.search(data.decode("utf-8"))
        if found and "pneumothorax" in found.group(1).lower():
            expected.add(re.search(r"/s(\d+)\.txt$", name).group(1))
    got = wh.sql("""
        SELECT r.study_id, s.split, p.sex
        FROM reports r JOIN studies s USING (dataset, study_id, patient_id) JOIN patients p USING (dataset, patient_id)
        WHERE r.dataset = 'mimic_cxr' AND r.impression ILIKE '%pneumothorax%'
    """).to_pylist()
    assert {row["study_id"] for row in got} == expected != set()
    # every such study carries a CheXpert or NegBio Pneumothorax label, as the labelers read the impression
    labelled = (
        wh.sql("""
        SELECT DISTINCT study_id FROM labels
        WHERE dataset = 'mimic_cxr' AND finding = 'pneumothorax' AND labeler IN ('chexpert', 'negbio')
    """)
        .column(0)
        .to_pylist()
    )
    assert expected <= set(labelled)
