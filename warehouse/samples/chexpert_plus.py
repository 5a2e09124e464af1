"""Format-faithful sample of CheXpert Plus (Stanford AIMI, credentialed, so not downloadable).

Writes what the release ships for reports and labels:

    df_chexpert_plus_240401.csv                 27 columns, one row per image, report repeated per image
    chexbert_labels/findings_fixed.json         JSON Lines, one record per path_to_image, 14 CheXpert keys
    chexbert_labels/impression_fixed.json
    chexbert_labels/report_fixed.json

CheXpert Plus re-releases the CheXpert v1.0 images, so its rows must name real CheXpert patients:
given the public CheXpert `train.csv(.gz)`, the sample reuses sampled patients' exact paths, views,
sexes and ages; without it, CheXpert-shaped patients are fabricated. A few `valid` patients
(patient64541 upwards, not in train.csv) are always added.

Format evidence (docs/datasets.md section 3 plus two public dumps of real rows):
- a documented sample row (index id 56628692162) shows the report layout and header set;
- ReXrank's `ReXRank_CheXpertPlus.json` copies real valid-split `section_*` values verbatim, showing
  they are raw slices of the report (leading newline/space, trailing " \\n" lines, 66-70 column hard
  wraps, upper-case numbered impressions) and that race is spelled e.g. "Black", "Pacific Islander".
"""

from __future__ import annotations

import csv
import gzip
import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

CSV_NAME = "df_chexpert_plus_240401.csv"
COLUMNS = (
    "path_to_image",
    "path_to_dcm",
    "frontal_lateral",
    "ap_pa",
    "deid_patient_id",
    "patient_report_date_order",
    "report",
    "section_narrative",
    "section_clinical_history",
    "section_history",
    "section_comparison",
    "section_technique",
    "section_procedure_comments",
    "section_findings",
    "section_impression",
    "section_end_of_impression",
    "section_summary",
    "section_accession_number",
    "age",
    "sex",
    "race",
    "ethnicity",
    "interpreter_needed",
    "insurance_type",
    "recent_bmi",
    "deceased",
    "split",
)
SECTION_COLUMNS = COLUMNS[7:18]
# [U] key order: CheXbert's CONDITIONS order (No Finding last), after path_to_image.
LABELS = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
    "No Finding",
)
LABEL_FILES = {  # file -> the text scope CheXbert labelled
    "findings_fixed.json": "findings",
    "impression_fixed.json": "impression",
    "report_fixed.json": "report",
}
SPLITS = ("train", "valid")
AGE_BUCKETS = ("0-20", "20-40", "40-60", "60-80", "80+")
SEX_VALUES = ("Female", "Male", "Unknown")
ANONYMIZED = (
    "This report has been anonymized. All dates are offset from the actual dates by a fixed "
    "interval associated with the patient."
)
ATTESTATION = "I have personally reviewed the images for this examination and agreed with the report transcribed above."
FIRST_VALID_PATIENT = 64541  # valid patients are patient64541..patient64740, absent from train.csv

# [U] value sets for the demographic columns; race/ethnicity spellings as seen in the ReXrank dump.
_RACES = (
    ("White", 50),
    ("Other", 16),
    ("Asian", 13),
    ("Unknown", 10),
    ("Black", 5.5),
    ("Pacific Islander", 1.5),
    ("Native American", 0.5),
    ("Patient Refused", 1),
)
_ETHNICITIES = (("Non-Hispanic/Non-Latino", 78), ("Hispanic/Latino", 11), ("Unknown", 10), ("Patient Refused", 1))
_INSURANCE = (("Private Insurance", 45), ("Medicare", 35), ("Medicaid", 15), ("Unknown", 5))
_YES_NO_INTERPRETER = (("No", 90), ("Yes", 7), ("", 3))
_YES_NO_DECEASED = (("No", 78), ("Yes", 22))
# Fabricated CheXpert shapes (train.csv: 52 % of patients have one study; views per study below).
_STUDIES_PER_PATIENT = ((1, 2, 3, 4, 5, 6, 8, 11), (52, 17, 9, 6, 4, 5, 4, 3))
_SEX_WEIGHTS = (40.6, 59.4, 0.05)
_SEX_WORDS = {"Female": ("female", "woman"), "Male": ("male", "man")}

# Label states of phrases, as CheXbert would read them: 1.0 positive, 0.0 negative, -1.0 uncertain.
POS, NEG, UNC = 1.0, 0.0, -1.0


@dataclass(frozen=True)
class Finding:
    """One abnormality: its findings sentence, impression sentence and what each says to CheXbert."""

    topic: str
    findings: str
    impression: str
    findings_labels: dict
    impression_labels: dict


_FINDINGS = (
    Finding(
        "devices",
        "Endotracheal tube terminates 4.5 cm above the carina.",
        "Endotracheal tube in standard position.",
        {"Support Devices": POS},
        {"Support Devices": POS},
    ),
    Finding(
        "devices",
        "Right internal jugular central venous catheter tip projects over the SVC.",
        "Right IJ catheter tip in the SVC. No pneumothorax.",
        {"Support Devices": POS},
        {"Support Devices": POS, "Pneumothorax": NEG},
    ),
    Finding(
        "devices",
        "Left chest wall pacemaker with leads in the right atrium and right ventricle.",
        "Stable left chest wall pacemaker.",
        {"Support Devices": POS},
        {"Support Devices": POS},
    ),
    Finding(
        "devices",
        "Feeding tube courses below the diaphragm with tip in the stomach.",
        "Feeding tube tip in the stomach.",
        {"Support Devices": POS},
        {"Support Devices": POS},
    ),
    Finding(
        "heart",
        "The cardiac silhouette is enlarged.",
        "Stable cardiomegaly.",
        {"Cardiomegaly": POS},
        {"Cardiomegaly": POS},
    ),
    Finding(
        "heart",
        "Widening of the mediastinal contour, unchanged.",
        "Stable widened mediastinum.",
        {"Enlarged Cardiomediastinum": POS},
        {"Enlarged Cardiomediastinum": POS},
    ),
    Finding(
        "lungs",
        "Patchy opacity in the left lower lobe.",
        "Left lower lobe opacity may represent atelectasis or pneumonia.",
        {"Lung Opacity": POS},
        {"Lung Opacity": POS, "Atelectasis": UNC, "Pneumonia": UNC},
    ),
    Finding(
        "lungs",
        "Increased interstitial markings and pulmonary vascular congestion.",
        "Mild pulmonary edema.",
        {"Edema": UNC},
        {"Edema": POS},
    ),
    Finding(
        "lungs",
        "Dense consolidation in the right upper lobe with air bronchograms.",
        "Right upper lobe consolidation, consistent with pneumonia.",
        {"Consolidation": POS, "Lung Opacity": POS},
        {"Consolidation": POS, "Pneumonia": POS},
    ),
    Finding(
        "lungs",
        "Linear opacities at both lung bases, likely subsegmental atelectasis.",
        "Bibasilar atelectasis.",
        {"Lung Opacity": POS, "Atelectasis": UNC},
        {"Atelectasis": POS},
    ),
    Finding(
        "lungs",
        "A 2 cm nodular opacity in the right upper lobe.",
        "Right upper lobe nodule. Recommend CT for further evaluation.",
        {"Lung Lesion": POS},
        {"Lung Lesion": POS},
    ),
    Finding(
        "pleura",
        "Small left pleural effusion.",
        "Small left pleural effusion.",
        {"Pleural Effusion": POS},
        {"Pleural Effusion": POS},
    ),
    Finding(
        "pleura",
        "Blunting of the right costophrenic angle, possibly a small effusion.",
        "Possible small right pleural effusion.",
        {"Pleural Effusion": UNC},
        {"Pleural Effusion": UNC},
    ),
    Finding(
        "pleura",
        "Small right apical pneumothorax.",
        "Small right apical pneumothorax.",
        {"Pneumothorax": POS},
        {"Pneumothorax": POS},
    ),
    Finding(
        "pleura",
        "Pleural thickening at the left apex.",
        "Left apical pleural thickening, unchanged.",
        {"Pleural Other": POS},
        {"Pleural Other": POS},
    ),
    Finding(
        "bones",
        "Healing fractures of the left fifth and sixth ribs.",
        "Left rib fractures.",
        {"Fracture": POS},
        {"Fracture": POS},
    ),
)
_NEGATIVE_FINDINGS = {  # topic -> (sentence, labels) used when no abnormality covers the topic
    "heart": (
        (
            "The cardiomediastinal silhouette is within normal limits.",
            {"Enlarged Cardiomediastinum": NEG, "Cardiomegaly": NEG},
        ),
        ("Heart size is normal.", {"Cardiomegaly": NEG}),
    ),
    "lungs": (
        ("The lungs are clear.", {"Lung Opacity": NEG}),
        ("No focal consolidation or pulmonary edema.", {"Consolidation": NEG, "Edema": NEG}),
    ),
    "pleura": (
        ("No pleural effusion or pneumothorax.", {"Pleural Effusion": NEG, "Pneumothorax": NEG}),
        ("No pneumothorax.", {"Pneumothorax": NEG}),
    ),
    "bones": (
        ("No acute osseous abnormality.", {"Fracture": NEG}),
        ("The visualized osseous structures are unremarkable.", {}),
    ),
}
Labelled = tuple[str, dict[str, float]]  # (sentence or phrase, CheXbert labels it implies)
_NORMAL_IMPRESSIONS: tuple[Labelled, ...] = (
    ("No acute cardiopulmonary process.", {}),
    ("No acute cardiopulmonary abnormality.", {}),
    ("No evidence of pneumonia.", {"Pneumonia": NEG}),
    ("No significant interval change.", {}),
)
_REASONS: tuple[Labelled, ...] = (  # clinical history reasons; "rule out" phrasing is uncertain to CheXbert
    ("ICU patient", {}),
    ("shortness of breath", {}),
    ("chest pain", {}),
    ("fever and cough", {}),
    ("line placement", {"Support Devices": POS}),
    ("rule out pneumothorax", {"Pneumothorax": UNC}),
    ("evaluate for pneumonia", {"Pneumonia": UNC}),
    ("status post CABG", {}),
    ("hypoxia", {}),
    ("s/p fall, rib pain", {}),
    ("tube placement", {"Support Devices": POS}),
    ("post-op", {}),
)
_TOPIC_ORDER = ("devices", "lungs", "pleura", "heart", "bones")
# [U] Stanford summary codes; only "2-ABNORMAL, PREVIOUSLY REPORTED" is documented.
_SUMMARY_NORMAL = "1-NORMAL"
_SUMMARY_ABNORMAL = (("2-ABNORMAL, PREVIOUSLY REPORTED", 70), ("4-POSSIBLE SIGNIFICANT FINDING, MAY NEED ACTION", 30))


@dataclass
class Image:
    """One image row as known from CheXpert train.csv (or fabricated in its shape)."""

    path: str  # train/patient00001/study1/view1_frontal.jpg
    frontal_lateral: str
    ap_pa: str
    sex: str
    age: float | None


@dataclass
class Patient:
    """A CheXpert patient with images grouped by study folder, in first-appearance order."""

    patient_id: str
    split: str
    linked: bool
    studies: dict[str, list[Image]] = field(default_factory=dict)


@dataclass
class Report:
    """A report's full text, its section_* column values and CheXbert labels per scope."""

    text: str
    sections: dict[str, str]
    labels: dict[str, dict]


def write_samples(out_dir: Path, *, patients: int = 60, seed: int = 0, chexpert_train_csv: Path | None = None) -> dict:
    """Write CheXpert Plus report and label files for `patients` train patients plus a few valid ones.

    With chexpert_train_csv, the train patients are sampled from that real CheXpert train.csv and every
    one of their images is written with its real path, view, sex and age. Returns the generator's truth.
    """
    if patients < 1:
        raise ValueError("need at least one patient")
    rng = random.Random(f"chexpert_plus:{seed}")
    if chexpert_train_csv is None:
        train = _fabricate_patients(rng, patients)
    else:
        train = _sample_linked_patients(rng, _read_chexpert_csv(Path(chexpert_train_csv)), patients)
    cohort = train + _valid_patients(rng, max(2, patients // 25))
    rows, reports = _rows(rng, cohort)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(out_dir / CSV_NAME, rows)
    _write_label_files(out_dir / "chexbert_labels", rows, reports)
    return _truth(cohort, rows, reports, seed)


T = TypeVar("T")


def _weighted(rng: random.Random, pairs: tuple[tuple[T, float], ...]) -> T:
    """Draw a value from (value, weight) pairs."""
    values, weights = zip(*pairs)
    return rng.choices(values, weights=weights)[0]


def _open_text(path: Path):
    """Open train.csv or train.csv.gz as text."""
    return (
        gzip.open(path, "rt", encoding="utf-8", newline="")
        if path.suffix == ".gz"
        else path.open(encoding="utf-8", newline="")
    )


def _plus_path(chexpert_path: str) -> str:
    """CheXpert-v1.0-small/train/patient00001/... -> train/patient00001/... (CheXpert Plus drops the root)."""
    for split in ("train/", "valid/"):
        if chexpert_path.startswith(split):
            return chexpert_path
        at = chexpert_path.find("/" + split)
        if at >= 0:
            return chexpert_path[at + 1 :]
    raise ValueError(f"not a CheXpert image path: {chexpert_path}")


def _read_chexpert_csv(path: Path) -> dict[str, list[list[str]]]:
    """A CheXpert v1.0 train.csv as [path, sex, age, view, ap_pa] rows per patient, in file order."""
    rows_by_patient: dict[str, list[list[str]]] = {}
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        header = next(reader)
        wanted = [header.index(name) for name in ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")]
        for row in reader:
            at = row[wanted[0]].find("patient")
            patient_id = row[wanted[0]][at : at + len("patient00000")]
            rows_by_patient.setdefault(patient_id, []).append([row[index] for index in wanted])
    return rows_by_patient


def _sample_linked_patients(rng: random.Random, available: dict[str, list[list[str]]], patients: int) -> list[Patient]:
    """Sample real patients with all their studies, listed in train.csv order so output is stable."""
    if patients > len(available):
        raise ValueError(f"asked for {patients} patients, train.csv has {len(available)}")
    chosen = set(rng.sample(list(available), patients))
    cohort = []
    for patient_id, rows in available.items():
        if patient_id not in chosen:
            continue
        patient = Patient(patient_id, "train", linked=True)
        for chexpert_path, sex, age, view, ap_pa in rows:
            image = Image(_plus_path(chexpert_path), view, ap_pa, sex, float(age) if age else None)
            patient.studies.setdefault(image.path.split("/")[2], []).append(image)
        cohort.append(patient)
    return cohort


def _fabricate_patients(rng: random.Random, patients: int) -> list[Patient]:
    """CheXpert-shaped train patients: patientNNNNN, studyN per patient, viewN_frontal/lateral."""
    numbers = sorted(rng.sample(range(1, FIRST_VALID_PATIENT), patients))
    cohort = []
    for number in numbers:
        patient = Patient(f"patient{number:05d}", "train", linked=False)
        sex = rng.choices(SEX_VALUES, weights=_SEX_WEIGHTS)[0]
        age = int(rng.triangular(18, 91, 66))
        for study_number in range(1, rng.choices(*_STUDIES_PER_PATIENT)[0] + 1):
            study_age = min(90, age + study_number // 3)
            patient.studies[f"study{study_number}"] = _fabricated_views(
                rng, f"train/{patient.patient_id}/study{study_number}", sex, float(study_age)
            )
        cohort.append(patient)
    return cohort


def _valid_patients(rng: random.Random, count: int) -> list[Patient]:
    """A few valid-split patients (one study each), numbered from patient64541 as in CheXpert."""
    numbers = sorted(rng.sample(range(FIRST_VALID_PATIENT, FIRST_VALID_PATIENT + 200), min(count, 200)))
    cohort = []
    for number in numbers:
        patient = Patient(f"patient{number:05d}", "valid", linked=False)
        sex = rng.choices(SEX_VALUES, weights=_SEX_WEIGHTS)[0]
        patient.studies["study1"] = _fabricated_views(
            rng, f"valid/{patient.patient_id}/study1", sex, float(int(rng.triangular(18, 91, 62)))
        )
        cohort.append(patient)
    return cohort


def _fabricated_views(rng: random.Random, study_dir: str, sex: str, age: float) -> list[Image]:
    """view1 frontal (AP ~85 %), then sometimes view2 (mostly lateral) and rarely view3."""
    n_views = 1 + (rng.random() < 0.18) + (rng.random() < 0.01)
    images = []
    for view in range(1, n_views + 1):
        lateral = view > 1 and rng.random() < 0.9
        if lateral:
            images.append(Image(f"{study_dir}/view{view}_lateral.jpg", "Lateral", "", sex, age))
        else:
            ap_pa = _weighted(rng, (("AP", 85), ("PA", 15), ("LL", 0.01)))
            images.append(Image(f"{study_dir}/view{view}_frontal.jpg", "Frontal", ap_pa, sex, age))
    return images


def _patient_columns(rng: random.Random, patient: Patient) -> dict:
    """Demographic columns that stay constant for a patient across all rows."""
    race = _weighted(rng, _RACES)
    ethnicity = "Unknown" if race == "Unknown" and rng.random() < 0.8 else _weighted(rng, _ETHNICITIES)
    bmi = round(rng.uniform(16.0, 42.0), 1) if rng.random() < 0.8 else None
    return {
        "deid_patient_id": patient.patient_id,
        "race": race,
        "ethnicity": ethnicity,
        "interpreter_needed": _weighted(rng, _YES_NO_INTERPRETER),
        "insurance_type": _weighted(rng, _INSURANCE),
        "recent_bmi": "" if bmi is None else repr(bmi),
        "deceased": _weighted(rng, _YES_NO_DECEASED),
    }


def _rows(rng: random.Random, cohort: list[Patient]) -> tuple[list[dict], dict[tuple[str, str], Report]]:
    """One CSV row per image; the study's report is repeated on each of its images."""
    rows, reports = [], {}
    accessions: list[str] = []
    for patient in cohort:
        constant = _patient_columns(rng, patient)
        dates = _study_dates(rng, max(int(study[5:]) for study in patient.studies))
        for study, images in patient.studies.items():
            order = int(study[5:])
            report = _report(rng, images, dates, order, accessions)
            reports[(patient.patient_id, study)] = report
            for image in images:
                row = {
                    "path_to_image": image.path,
                    "path_to_dcm": image.path[: -len(".jpg")] + ".dcm",
                    "frontal_lateral": image.frontal_lateral,
                    "ap_pa": image.ap_pa,
                    "patient_report_date_order": str(order),  # [U] equals the study number
                    "report": report.text,
                    **report.sections,
                    "age": "" if image.age is None else repr(image.age),
                    "sex": image.sex,
                    "split": patient.split,
                    **constant,
                }
                rows.append({column: row[column] for column in COLUMNS})
    return rows, reports


def _study_dates(rng: random.Random, last_study: int) -> list[tuple[int, int, int]]:
    """Shifted (month, day, year) per study number 1..last, increasing as CheXpert numbers studies."""
    year, month, day = rng.randint(2002, 2016), rng.randint(1, 12), rng.randint(1, 28)
    dates = []
    for _ in range(last_study):
        dates.append((month, day, year))
        month += rng.randint(0, 5)
        day = rng.randint(1, 28)
        year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return dates


def _accession(rng: random.Random, issued: list[str]) -> str:
    """7-digit accession; ~3 % reuse an earlier one (the column is many-to-many in the real file)."""
    if issued and rng.random() < 0.03:
        return rng.choice(issued)
    issued.append(str(rng.randint(1_000_000, 9_999_999)))
    return issued[-1]


@dataclass
class _Style:
    """Whitespace habits of one report: the real sections keep the dictation system's spacing."""

    eol: str  # line end: "\n", or " \n" when the RIS left a trailing space
    gap: str  # blank line between sections: "", "\n" or " \n"
    width: int  # hard-wrap column
    upper: bool  # impression dictated in capitals
    number: str  # "{n}. " / "{n}." / "{n}.  "

    def wrap(self, text: str) -> str:
        """Hard-wrap prose at word boundaries like the source RIS did (inner double spaces survive)."""
        lines, line = [], ""
        for word in text.split(" "):
            if line and len(line) + 1 + len(word) > self.width:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        lines.append(line)
        return self.eol.join(lines)

    def block(self, text: str) -> str:
        """Section body that starts on the line after its header."""
        return "\n" + self.gap + text + "\n" + self.gap

    def inline(self, text: str) -> str:
        """Section body on the header's own line."""
        return " " + text + self.eol + self.gap


def _style(rng: random.Random) -> _Style:
    """Draw one report's spacing: tight, blank-line separated, or with the " \n" blank lines."""
    eol, gap = rng.choice((("\n", ""), ("\n", "\n"), (" \n", " \n")))
    return _Style(
        eol=eol,
        gap=gap,
        width=rng.randint(64, 70),
        upper=rng.random() < 0.55,
        number=rng.choice(("{n}. ", "{n}.", "{n}.  ")),
    )


def _report(rng: random.Random, images: list[Image], dates: list, order: int, accessions: list[str]) -> Report:
    """Pick the study's abnormalities, then render one of three report templates."""
    chosen = _pick_findings(rng)
    style = _style(rng)
    template = rng.choices((_structured, _legacy, _narrative_only), weights=(82, 10, 8))[0]
    return template(rng, style, chosen, images, dates, order, _accession(rng, accessions))


def _pick_findings(rng: random.Random) -> list[Finding]:
    """0-3 abnormalities on distinct topics (about a third of studies are normal)."""
    k = rng.choices((0, 1, 2, 3), weights=(33, 35, 22, 10))[0]
    picked: list[Finding] = []
    while len(picked) < k:
        finding = rng.choice(_FINDINGS)
        if all(finding.topic != other.topic for other in picked):
            picked.append(finding)
    return picked


def _findings_phrases(rng: random.Random, chosen: list[Finding]) -> list[tuple[str, dict]]:
    """Findings prose: the abnormal sentence for a topic, else a negative statement about it."""
    by_topic = {finding.topic: finding for finding in chosen}
    phrases = []
    for topic in _TOPIC_ORDER:
        if topic in by_topic:
            phrases.append((by_topic[topic].findings, by_topic[topic].findings_labels))
        elif topic in _NEGATIVE_FINDINGS:
            phrases.append(rng.choice(_NEGATIVE_FINDINGS[topic]))
    return phrases


def _impression_items(rng: random.Random, chosen: list[Finding]) -> list[tuple[str, dict]]:
    """Impression statements, one per abnormality, or a normal one-liner."""
    if not chosen:
        return [rng.choice(_NORMAL_IMPRESSIONS)]
    return [(finding.impression, finding.impression_labels) for finding in chosen]


def _procedure(images: list[Image], date: tuple[int, int, int], rng: random.Random) -> str:
    """NARRATIVE line naming the exam and its (shifted) date, e.g. "Chest 1 View, 8-8-2005"."""
    month, day, year = date
    return rng.choice(
        (
            f"{_chest_views(images)}, {month}-{day}-{year}",
            f"RADIOGRAPHIC EXAMINATION OF THE CHEST: {month}/{day}/{year}",
            _chest_views(images).upper().replace("CHEST ", "CHEST, "),
        )
    )


def _chest_views(images: list[Image]) -> str:
    """Exam name by image count: "Chest 1 View", "Chest 2 Views"."""
    return f"Chest {len(images)} View{'s' if len(images) > 1 else ''}"


def _history(rng: random.Random, images: list[Image]) -> tuple[str, dict]:
    """Clinical history in one of the dictation forms seen in the real rows."""
    reason, labels = rng.choice(_REASONS)
    image = images[0]
    plain = reason[0].upper() + reason[1:] + "."
    if image.age is None or image.sex not in _SEX_WORDS:
        return plain, labels
    age = int(image.age) - rng.randint(0, 1)  # dictated age often lags the recorded one by a year
    form = rng.randrange(4)
    if form == 0:
        return f"{age} years of age, {image.sex}, {reason}.", labels
    if form == 1:
        return f"A {age}-year-old {rng.choice(_SEX_WORDS[image.sex])} with {reason}.", labels
    if form == 2:
        return f"{age} years {image.sex}, {reason}", labels
    return plain, labels


def _comparison(dates: list, order: int) -> str:
    """The previous study's date, or None. for a first study."""
    if order == 1:
        return "None."
    month, day, year = dates[order - 2]
    return f"{month}/{day}/{year}."


def _numbered(style: _Style, statements: list[str]) -> list[str]:
    """Impression items, numbered when there is more than one, each hard-wrapped on its own."""
    if len(statements) == 1:
        return [style.wrap(statements[0])]
    return [style.wrap(style.number.format(n=n) + text) for n, text in enumerate(statements, start=1)]


def _merge_labels(label_sets: list[dict], has_text: bool) -> dict:
    """CheXbert-style merge: positive beats uncertain beats negative; No Finding when nothing is found."""
    merged: dict = dict.fromkeys(LABELS)
    rank = {POS: 3, UNC: 2, NEG: 1}
    for labels in label_sets:
        for name, value in labels.items():
            if merged[name] is None or rank[value] > rank[merged[name]]:
                merged[name] = value
    if has_text and not any(merged[name] in (POS, UNC) for name in LABELS[:12]):
        merged["No Finding"] = POS
    return merged


Part = tuple[str, str, str | None]  # (HEADER, body after "HEADER:", section column or None)


def _assemble(parts: Sequence[Part], strip: bool) -> tuple[str, dict[str, str]]:
    """Join "HEADER:" + body parts into the report; each mapped column gets its body as a raw slice."""
    text = "".join(f"{header}:{body}" for header, body, _ in parts)
    sections = dict.fromkeys(SECTION_COLUMNS, "")
    for _, body, column in parts:
        if column:
            sections[column] = body.strip() if strip else body
    return text + "\n" + ANONYMIZED, sections


def _structured(rng, style, chosen, images, dates, order, accession) -> Report:
    """The common layout: NARRATIVE, (CLINICAL) HISTORY, COMPARISON, TECHNIQUE, FINDINGS, IMPRESSION, ..."""
    parts, history_labels = _structured_context(rng, style, images, dates, order)
    findings = _findings_phrases(rng, chosen) if rng.random() < 0.55 else []
    if findings:
        prose = style.wrap(("  " if style.eol == " \n" else " ").join(text for text, _ in findings))
        parts.append(("FINDINGS", style.block(prose), "section_findings"))
    items = _impression_items(rng, chosen)
    parts += _structured_conclusion(rng, style, chosen, items, accession)
    text, sections = _assemble(parts, strip=False)
    finding_labels = [labels for _, labels in findings]
    impression_labels = [labels for _, labels in items]
    return Report(
        text,
        sections,
        {
            "findings": _merge_labels(finding_labels, bool(findings)),
            "impression": _merge_labels(impression_labels, True),
            "report": _merge_labels(history_labels + finding_labels + impression_labels, True),
        },
    )


def _structured_context(rng, style, images, dates, order) -> tuple[list[Part], list[dict]]:
    """The sections before FINDINGS, and the labels a history "rule out" phrase gives the whole report."""
    parts: list[Part] = []
    if rng.random() < 0.97:
        parts.append(("NARRATIVE", style.block(_procedure(images, dates[order - 1], rng)), "section_narrative"))
    history, history_labels = _history(rng, images)
    history_roll = rng.random()
    if history_roll < 0.55:
        parts.append(("CLINICAL HISTORY", style.inline(style.wrap(history)), "section_clinical_history"))
    elif history_roll < 0.80:
        parts.append(("HISTORY", style.inline(style.wrap(history)), "section_history"))
    else:
        history_labels = {}
    if rng.random() < 0.85:
        parts.append(("COMPARISON", style.inline(_comparison(dates, order)), "section_comparison"))
    single = len(images) == 1
    if rng.random() < 0.35:
        technique = "Single portable AP view of the chest." if single else "PA and lateral views of the chest."
        parts.append(("TECHNIQUE", style.inline(technique), "section_technique"))
    if rng.random() < 0.17:
        comment = "Single frontal view of the chest." if single else "Frontal and lateral views of the chest."
        parts.append(("PROCEDURE COMMENTS", style.inline(comment), "section_procedure_comments"))
    return parts, [history_labels]


def _structured_conclusion(rng, style, chosen, items, accession) -> list[Part]:
    """IMPRESSION (attestation inside it or after END OF IMPRESSION), SUMMARY code, ACCESSION NUMBER."""
    statements = [text.upper() if style.upper else text for text, _ in items]
    separator = "\n" + style.gap
    impression = separator.join(_numbered(style, statements))
    attestation_in_impression = rng.random() < 0.3
    if attestation_in_impression:
        impression += separator + ATTESTATION.replace(" and agreed ", " and agreed\n")
    parts: list[Part] = [("IMPRESSION", style.block(impression), "section_impression")]
    if not attestation_in_impression and rng.random() < 0.45:
        parts.append(("END OF IMPRESSION", style.block(ATTESTATION), "section_end_of_impression"))
    if rng.random() < 0.6:
        code = _SUMMARY_NORMAL if not chosen else _weighted(rng, _SUMMARY_ABNORMAL)
        parts.append(("SUMMARY", style.block(code), "section_summary"))
    if rng.random() < 0.97:
        parts.append(("ACCESSION NUMBER", "\n" + accession, "section_accession_number"))
    return parts


def _legacy(rng, style, chosen, images, dates, order, accession) -> Report:
    """The documented sample row's layout and its odd section mapping.

    [U] per the sample row (index id 56628692162): HISTORY text lands in section_clinical_history,
    the IMPRESSION body in section_findings (section_impression empty) and the SUMMARY body in
    section_end_of_impression, all stripped. Reproduced for a minority of reports so adapters do not
    assume header names map 1:1 onto columns.
    """
    history, history_labels = _history(rng, images)
    items = _impression_items(rng, chosen)
    numbered = "\n\n".join(f"{n}.{text.upper()}" for n, (text, _) in enumerate(items, start=1))
    code = _SUMMARY_NORMAL if not chosen else _weighted(rng, _SUMMARY_ABNORMAL)
    month, day, year = dates[order - 1]
    parts = [
        ("NARRATIVE", f"\n{_chest_views(images)}, {month}-{day}-{year}\n\n", "section_narrative"),
        ("HISTORY", f" {history}\n\n", "section_clinical_history"),
        ("COMPARISON", f" {_comparison(dates, order)}\n\n", "section_comparison"),
        ("IMPRESSION", f"\n\n{numbered}\n\n", "section_findings"),
        ("SUMMARY", f" {code}\n{ATTESTATION}\n\n", "section_end_of_impression"),
        ("ACCESSION NUMBER", f"\n{accession}", "section_accession_number"),
    ]
    text, sections = _assemble(parts, strip=True)
    impression_labels = [labels for _, labels in items]
    return Report(
        text,
        sections,
        {
            "findings": _merge_labels(impression_labels, True),
            "impression": _merge_labels([], False),
            "report": _merge_labels([history_labels] + impression_labels, True),
        },
    )


def _narrative_only(rng, style, chosen, images, dates, order, accession) -> Report:
    """Free text under NARRATIVE with no other headers, so the narrative column holds the whole body."""
    findings = _findings_phrases(rng, chosen)
    items = _impression_items(rng, chosen)
    body = (
        _procedure(images, dates[order - 1], rng)
        + "\n\n"
        + style.wrap(" ".join(t for t, _ in findings))
        + "\n\n"
        + "\n".join(_numbered(style, [t.upper() for t, _ in items]))
    )
    parts = [
        ("NARRATIVE", style.block(body), "section_narrative"),
        ("ACCESSION NUMBER", "\n" + accession, "section_accession_number"),
    ]
    text, sections = _assemble(parts, strip=False)
    labels = [labels for _, labels in findings] + [labels for _, labels in items]
    return Report(
        text,
        sections,
        {
            "findings": _merge_labels([], False),
            "impression": _merge_labels([], False),
            "report": _merge_labels(labels, True),
        },
    )


def _write_csv(path: Path, rows: list[dict]) -> None:
    """pandas-style CSV: header, minimal quoting, NaN as empty, '\\n' line ends."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _label_json(labels: dict) -> str:
    """[U] The labels as pandas to_json(orient="records", lines=True) writes them: compact floats, null.

    The files hold null for unmentioned, which points at pandas rather than json.dumps (NaN).
    """
    return json.dumps({name: labels[name] for name in LABELS}, separators=(",", ":"))


def _write_label_files(label_dir: Path, rows: list[dict], reports: dict) -> None:
    """One JSON Lines file per labelled scope, one record per image in the CSV's row order.

    path_to_image comes first with "/" escaped as "\\/", as pandas writes it.
    """
    label_dir.mkdir(parents=True, exist_ok=True)
    for file_name, scope in LABEL_FILES.items():
        study_json = {key: _label_json(report.labels[scope]) for key, report in reports.items()}
        lines = [
            '{"path_to_image":'
            + json.dumps(row["path_to_image"]).replace("/", "\\/")
            + ","
            + study_json[_study_key(row["path_to_image"])][1:]
            + "\n"
            for row in rows
        ]
        (label_dir / file_name).write_text("".join(lines), encoding="utf-8", newline="")


def _study_key(path_to_image: str) -> tuple[str, str]:
    """(patient folder, study folder): the study key CheXpert Plus itself lacks as a column."""
    _, patient, study, _ = path_to_image.split("/")
    return patient, study


def _age_bucket(age: str) -> str:
    """Bucket of an age cell ("62.0"; blank is "unknown"): [0,20), [20,40), [40,60), [60,80), 80+."""
    if age == "":
        return "unknown"
    return AGE_BUCKETS[min(4, int(float(age) // 20))]


def _truth(cohort: list[Patient], rows: list[dict], reports: dict, seed: int) -> dict:
    """Counts the generator knows by construction, for tests to check against a recount."""
    first_rows: dict[tuple[str, str], dict] = {}
    for row in rows:
        first_rows.setdefault(_study_key(row["path_to_image"]), row)
    splits = {}
    for split in SPLITS:
        study_rows = [row for row in first_rows.values() if row["split"] == split]
        sections = {column: {"studies_present": 0, "tokens": 0} for column in SECTION_COLUMNS}
        for row in study_rows:
            for column in SECTION_COLUMNS:
                if row[column].strip():
                    sections[column]["studies_present"] += 1
                    sections[column]["tokens"] += len(row[column].split())
        sex = dict.fromkeys(SEX_VALUES, 0)
        ages = dict.fromkeys(AGE_BUCKETS + ("unknown",), 0)
        for row in study_rows:
            sex[row["sex"]] += 1
            ages[_age_bucket(row["age"])] += 1
        splits[split] = {
            "patients": sum(1 for patient in cohort if patient.split == split),
            "studies": len(study_rows),
            "images": sum(1 for row in rows if row["split"] == split),
            "sections": sections,
            "sex": sex,
            "age_bucket": ages,
        }
    images_per_study = Counter(_study_key(row["path_to_image"]) for row in rows)
    positives = {file_name: dict.fromkeys(LABELS, 0) for file_name in LABEL_FILES}
    for key, report in reports.items():
        for file_name, scope in LABEL_FILES.items():
            for name in LABELS:
                if report.labels[scope][name] == POS:
                    positives[file_name][name] += images_per_study[key]
    return {
        "dataset": "chexpert-plus",
        "seed": seed,
        "rows": len(rows),
        "studies": len(reports),
        "patients": len(cohort),
        "linked_to_chexpert_patients": sum(patient.linked for patient in cohort),
        "splits": splits,
        "label_positives": positives,
        "counting": {
            "sections": "per study (first image row); present = non-blank after strip; tokens = str.split()",
            "sex_and_age": "per study; raw sex values; age buckets from the age column, blank = unknown",
            "label_positives": "image records with value 1.0 in each chexbert_labels file",
        },
    }
