"""Format-faithful sample of the ReXGradient-160K Hugging Face repository (gated, so not downloadable).

Writes the `metadata/` folder exactly as the real repository lays it out:

    metadata/{train,valid,test}_metadata.csv                  one row per study, no image paths
    metadata/{train,valid,test}_metadata.json                 per-study dict keyed by the composite id
    metadata/{train,valid,test}_metadata_view_position.json   the same plus per-image ImageViewPosition
    metadata/interstitial_pattern_bbox.json                   a few Label Studio rectangles

Images are not shipped; ImagePath entries point at where `deid_png/` would be extracted.
Value shapes follow docs/datasets.md section 1; where it marks a fact [U] the choice is commented here.
Report lengths and demographics follow the paper's Tables 1 and 2.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import random
import string
from pathlib import Path

SPLITS = ("train", "valid", "test")
UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's generate_uid root, as seen in real keys
SECTIONS = ("Indication", "Comparison", "Findings", "Impression")
CSV_COLUMNS = (
    "id",
    "StudyDate",
    "PatientID",
    "AccessionNumber",
    "StudyInstanceUid",
    "PatientSex",
    "PatientAge",
    "EthnicGroup",
    "PatientWeight",
    "InstitutionName",
    "Manufacturer",
    "Indication",
    "Comparison",
    "Findings",
    "Impression",
)
IMAGE_FIELDS = ("ImagePath", "ImageModality", "ImageShape", "ImageBodyPart")
SEX_VALUES = ("M", "F", "O", "")
AGE_BUCKETS = ("0-20", "20-40", "40-60", "60-80", "80+")

# Patients per split: the real split is ~88/6/6, enlarged here so small samples still fill valid/test.
_SPLIT_SHARES = (0.70, 0.15, 0.15)
# Table 2 (train row): age mix and sex mix in percent.
_AGE_BUCKET_WEIGHTS = (16.9, 19.4, 25.1, 26.0, 12.6)
_SEX_WEIGHTS = (49.0, 49.5, 1.0, 0.5)  # unknown 1.5 % split into "O" and blank
# Studies per patient (mean ~1.46 = 160,000 / 109,487) and images per study (mean ~1.71 = 273,004 / 160,000).
_STUDIES_PER_PATIENT = ((1, 2, 3, 4, 5, 6), (73, 16, 6, 3, 1.2, 0.8))
_IMAGES_PER_STUDY = ((1, 2, 3, 4), (40, 51, 7, 2))

# View positions: the messy real vocabulary (V-3p list in docs/datasets.md). UNKNOWN is ~12 % of train images.
# None is written as JSON null [U]: the third-party list shows "None", most plausibly str() of a null.
_FRONTAL_VIEWS = (
    ("PA", 38),
    ("AP", 30),
    ("UNKNOWN", 12),
    ("POSTERO_ANTERIOR", 6),
    ("ANTERO_POSTERIOR", 4),
    ("ERECT", 1.5),
    ("SUPINE", 1.5),
    ("AP AXIAL", 0.6),
    ("N/A", 0.8),
    (None, 0.8),
    ("OTHER", 0.3),
    ("PICC LINE", 0.2),
    ("KUB", 0.1),
)
_LATERAL_VIEWS = (
    ("LATERAL", 70),
    ("UNKNOWN", 12),
    ("LL", 8),
    ("LAT", 5),
    ("DECUBITUS", 1.5),
    ("OBLIQUE", 1.2),
    ("RAO", 0.3),
    ("LAO", 0.3),
    ("RPO", 0.2),
    ("LPO", 0.2),
    ("N/A", 0.5),
    (None, 0.5),
)
# [U] ImageShape: original DICOM [Rows, Columns] as two ints (the PNGs are 25 % of this).
_FRONTAL_SHAPES = ((2500, 2048), (3000, 2500), (2140, 1760), (2336, 2836), (3032, 2520), (2022, 2022), (2688, 2208))
_LATERAL_SHAPES = ((2500, 2048), (2836, 2336), (3000, 2500), (2140, 1760), (2208, 2688))
# [U] ImageBodyPart: DICOM BodyPartExamined, mostly CHEST with the usual stray spellings.
_BODY_PARTS = (("CHEST", 90), ("", 4), ("THORAX", 3), ("PORT CHEST", 2), ("CHEST_LAT", 1))
# [U] Sites: paper says 3 health systems / 79 sites. InstitutionName and Manufacturer come from DICOM
# headers; names were pseudonymised, so often blank. Modality per site: CR or DX.
_SITES = (
    ("", "FUJIFILM Corporation", "CR"),
    ("", "Carestream Health", "DX"),
    ("", "GE Healthcare", "DX"),
    ("", "", "CR"),
    ("MERCY REGIONAL MEDICAL CENTER", "Philips Medical Systems", "DX"),
    ("NORTHSIDE COMMUNITY HOSPITAL", "KODAK", "CR"),
    ("VALLEY IMAGING CENTER", "Konica Minolta", "DX"),
    ("ST. LUKE'S HOSPITAL", "SIEMENS", "DX"),
    ("Lakeview Medical Center", "Agfa", "CR"),
    ("UNIVERSITY HOSPITAL, EAST CAMPUS", "Canon Inc.", "DX"),
    ("Riverside Urgent Care", "Carestream Health", "CR"),
)
# [U] EthnicGroup: DICOM (0010,2160), free text and usually blank; constant per patient.
_ETHNIC_GROUPS = (
    ("", 74),
    ("WHITE", 9),
    ("BLACK", 5),
    ("HISPANIC", 4),
    ("W", 2),
    ("B", 1),
    ("ASIAN", 1.5),
    ("OTHER", 1.5),
    ("UNKNOWN", 2),
)

_INDICATIONS = (
    "Cough.",
    "Shortness of breath.",
    "Chest pain, rule out acute process.",
    "Cough and fever for 3 days.",
    "Chest pain, shortness of breath.",
    "Pre-operative evaluation.",
    "Follow-up of right lower lobe pneumonia.",
    "Evaluate endotracheal tube placement.",
    "History of CHF, increasing dyspnea.",
    "Fall with left-sided chest wall pain.",
    "Hypoxia, rule out pneumonia.",
    "Post-procedure evaluation for pneumothorax after central line placement.",
    "Abnormal breath sounds.",
    "Wheezing, history of asthma.",
    'Fever and tachycardia; evaluate for "infiltrate".',
    "Tuberculosis screening.",
    "Motor vehicle collision, chest trauma.",
    "Sickle cell disease with chest pain.",
    "Generalized weakness, evaluate for infection.",
    "Productive cough in a smoker.",
    "Rule out aspiration after witnessed vomiting.",
    "PICC line placement.",
    "Worsening shortness of breath and bilateral lower extremity edema.",
    "Cough, congestion and low-grade fever.",
    "Status post left chest tube removal.",
    "Persistent cough for 2 weeks, evaluate for pneumonia.",
    "History of lung cancer, follow-up imaging.",
    "Chest pain radiating to the left arm.",
    "Evaluate for pulmonary edema in patient with renal failure.",
    "Dyspnea on exertion.",
)
_COMPARISON_TEMPLATES = (
    "Chest radiograph from {date}.",
    "Prior study dated {date}.",
    "CT chest {date}.",
    "{date}",
    "Radiographs of the chest from 2 days prior.",
    "Same-day CT abdomen and pelvis.",
    "Multiple prior chest radiographs, most recent {date}.",
    "Chest x-ray {date}",
)
_NORMAL_FINDINGS = {
    "lungs": (
        "The lungs are clear.",
        "Lungs are clear bilaterally without focal consolidation.",
        "No focal airspace consolidation.",
        "The lungs are well expanded and clear.",
    ),
    "pleura": (
        "No pleural effusion or pneumothorax.",
        "There is no pleural effusion or pneumothorax.",
        "No pneumothorax or large pleural effusion.",
    ),
    "heart": (
        "The cardiomediastinal silhouette is within normal limits.",
        "Heart size is normal.",
        "Normal cardiac and mediastinal contours.",
        "The heart and mediastinum are unremarkable.",
    ),
    "bones": (
        "No acute osseous abnormality.",
        "The visualized osseous structures are unremarkable.",
        "Mild degenerative changes of the thoracic spine.",
        "No acute fracture is identified.",
    ),
}
_EXTRA_FINDINGS = (
    "Pulmonary vascularity is within normal limits.",
    "The upper abdomen is unremarkable.",
    "Surgical clips project over the right upper quadrant.",
    "Soft tissues are unremarkable.",
)
# (topic, findings sentence, impression sentence); the structured-report headers group by topic.
_CONDITIONS = (
    (
        "lungs",
        "Patchy airspace opacity in the right lower lobe, concerning for pneumonia.",
        "Right lower lobe airspace opacity, concerning for pneumonia in the appropriate clinical setting.",
    ),
    (
        "lungs",
        "Streaky bibasilar opacities, likely atelectasis.",
        "Bibasilar opacities, most likely atelectasis, although early infection is not excluded.",
    ),
    (
        "lungs",
        "Diffuse interstitial markings with Kerley B lines, consistent with mild interstitial edema.",
        "Mild interstitial pulmonary edema, slightly increased compared to the prior exam.",
    ),
    (
        "lungs",
        "A 1.4 × 1.1 cm nodular opacity projects over the left upper lobe.",
        "Left upper lobe nodular opacity; CT chest is recommended for further characterization.",
    ),
    (
        "lungs",
        "The lungs are hyperinflated with flattening of the hemidiaphragms, compatible with COPD.",
        "Hyperinflation consistent with COPD, without superimposed acute process.",
    ),
    (
        "lungs",
        "Peribronchial thickening without focal consolidation.",
        "Peribronchial thickening, which can be seen with viral illness or reactive airway disease.",
    ),
    (
        "pleura",
        "Small left pleural effusion with blunting of the costophrenic angle. No pneumothorax.",
        "Small left pleural effusion with adjacent atelectasis.",
    ),
    (
        "pleura",
        "Small right apical pneumothorax measuring approximately 1.5 cm. No pleural effusion.",
        "Small right apical pneumothorax. Findings were communicated to the ordering provider.",
    ),
    (
        "heart",
        "The cardiac silhouette is enlarged. Mediastinal contours are stable.",
        "Stable cardiomegaly without pulmonary edema.",
    ),
    (
        "heart",
        "Tortuous and calcified thoracic aorta. Heart size is upper normal.",
        "Aortic atherosclerosis. No acute cardiopulmonary abnormality.",
    ),
    (
        "devices",
        "Endotracheal tube tip terminates 4.5 cm above the carina. Enteric tube courses below the "
        "diaphragm with tip out of the field of view.",
        "Endotracheal and enteric tubes in satisfactory position.",
    ),
    (
        "devices",
        "Left chest wall dual-lead pacemaker with leads in the right atrium and right ventricle.",
        "Stable appearance of the cardiac pacemaker, no acute cardiopulmonary process.",
    ),
    (
        "devices",
        "Right internal jugular central venous catheter with tip in the mid SVC.",
        "Right IJ catheter tip in the mid SVC. No pneumothorax.",
    ),
    (
        "bones",
        "Acute-appearing fracture of the left lateral 6th rib, without displacement.",
        "Acute nondisplaced left 6th rib fracture. No pneumothorax.",
    ),
    (
        "bones",
        "Postsurgical changes of median sternotomy with intact sternal wires.",
        "Postoperative changes of median sternotomy, otherwise no acute findings.",
    ),
)
_NORMAL_IMPRESSIONS = (
    "No acute cardiopulmonary process.",
    "No acute cardiopulmonary abnormality.",
    "No radiographic evidence of acute cardiopulmonary disease.",
    "Normal chest radiograph.",
    "No acute cardiopulmonary findings. Stable appearance of the chest compared to prior.",
)
_TOPIC_ORDER = ("devices", "lungs", "pleura", "heart", "bones")
_STRUCTURED_HEADERS = {
    "devices": "Lines/tubes",
    "lungs": "Lungs",
    "pleura": "Pleura",
    "heart": "Heart and mediastinum",
    "bones": "Bones",
    "other": "Other",
}


def write_samples(out_dir: Path, *, patients: int = 60, seed: int = 0) -> dict:
    """Write a ReXGradient-160K-shaped HF repository under out_dir; return the generator's truth."""
    if patients < 3:
        raise ValueError("need at least 3 patients so every split gets one")
    rng = random.Random(f"rexgradient:{seed}")
    metadata_dir = Path(out_dir) / "metadata"
    metadata_dir.mkdir(parents=True, exist_ok=True)
    issued: set[str] = set()
    studies_by_split = {}
    for split, n_patients in zip(SPLITS, _split_sizes(patients)):
        studies = [study for _ in range(n_patients) for study in _patient_studies(rng, issued)]
        rng.shuffle(studies)  # real files are not grouped by patient; adapters must not rely on order
        studies_by_split[split] = studies
        _write_csv(metadata_dir / f"{split}_metadata.csv", studies)
        _write_json(metadata_dir / f"{split}_metadata.json", studies, with_views=False)
        _write_json(metadata_dir / f"{split}_metadata_view_position.json", studies, with_views=True)
    boxes = _write_bboxes(metadata_dir / "interstitial_pattern_bbox.json", rng, studies_by_split["train"])
    return _truth(studies_by_split, boxes, seed)


def _split_sizes(patients: int) -> tuple[int, int, int]:
    """Patients per split: 70/15/15 with at least one patient in valid and test."""
    valid = max(1, round(patients * _SPLIT_SHARES[1]))
    test = max(1, round(patients * _SPLIT_SHARES[2]))
    return patients - valid - test, valid, test


def _grdn_id(rng: random.Random, issued: set[str]) -> str:
    """PatientID / AccessionNumber: GRDN + 12 upper-case alphanumerics, e.g. GRDN00E7AJHS0528."""
    while True:
        value = "GRDN" + "".join(rng.choices(string.ascii_uppercase + string.digits, k=12))
        if value not in issued:
            issued.add(value)
            return value


def _uid(rng: random.Random) -> str:
    """A pydicom generate_uid()-style UID: root + first 38 digits of a 512-bit hash as an integer."""
    digits = str(rng.getrandbits(512))
    while len(digits) < 38:
        digits = str(rng.getrandbits(512))
    return UID_ROOT + digits[: 64 - len(UID_ROOT)]


def _weighted(rng: random.Random, pairs: tuple) -> object:
    """Draw a value from (value, weight) pairs."""
    values, weights = zip(*pairs)
    return rng.choices(values, weights=weights)[0]


def _patient_studies(rng: random.Random, issued: set[str]) -> list[dict]:
    """All studies of one new patient: constant sex, ethnicity and site, ages that follow the dates."""
    patient_id = _grdn_id(rng, issued)
    sex = rng.choices(SEX_VALUES, weights=_SEX_WEIGHTS)[0]
    ethnic_group = _weighted(rng, _ETHNIC_GROUPS)
    weight = _patient_weight(rng)
    home_site = rng.randrange(len(_SITES))
    first_date = dt.date(2010, 1, 1) + dt.timedelta(days=rng.randrange(13 * 365))
    birth_date = first_date - dt.timedelta(days=_first_age_days(rng))
    n_studies = rng.choices(*_STUDIES_PER_PATIENT)[0]
    study_date = first_date
    studies = []
    for _ in range(n_studies):
        site = _SITES[home_site if rng.random() < 0.85 else rng.randrange(len(_SITES))]
        study = {
            "PatientID": patient_id,
            "AccessionNumber": _grdn_id(rng, issued),
            "StudyInstanceUid": _uid(rng),
            "StudyDate": study_date.strftime("%Y%m%d"),
            "PatientSex": sex,
            "PatientAge": _dicom_age(study_date, birth_date),
            "EthnicGroup": ethnic_group,
            "PatientWeight": weight,
            "InstitutionName": site[0],
            "Manufacturer": site[1],
        }
        study["images"] = _images(rng, study, modality=site[2])
        study.update(_report(rng, study_date))
        studies.append(study)
        study_date += dt.timedelta(days=rng.randint(1, 900))
    return studies


def _first_age_days(rng: random.Random) -> int:
    """Age at the first study, drawn from Table 2's buckets; 80+ stops at 90 (HIPAA caps ages)."""
    bucket = rng.choices(range(len(AGE_BUCKETS)), weights=_AGE_BUCKET_WEIGHTS)[0]
    low, high = (0, 20, 40, 60, 80)[bucket], (20, 40, 60, 80, 91)[bucket]
    return int(rng.uniform(low, high) * 365.25)


def _dicom_age(study_date: dt.date, birth_date: dt.date) -> str:
    """DICOM AS string: 3 digits + unit; days for neonates, months for infants ("006M"), else years."""
    days = (study_date - birth_date).days
    if days < 31:
        return f"{days:03d}D"
    if days < 365:
        return f"{days * 12 // 365:03d}M"
    # [U] ages are capped at "090Y" as HIPAA de-identification usually does
    return f"{min(90, int(days / 365.25)):03d}Y"


def _patient_weight(rng: random.Random) -> str:
    """[U] PatientWeight as the DICOM DS string; usually blank, sometimes "0", lbs converted to kg."""
    roll = rng.random()
    if roll < 0.70:
        return ""
    if roll < 0.75:
        return "0"
    if roll < 0.88:
        return str(rng.randint(40, 130))
    return f"{rng.randint(90, 300) * 0.45359237:.7g}"


def _images(rng: random.Random, study: dict, *, modality: str) -> list[dict]:
    """1-4 images: a frontal first, usually a lateral second, each in its own series (mostly)."""
    n_images = rng.choices(*_IMAGES_PER_STUDY)[0]
    series_uid = ""
    images = []
    for index in range(n_images):
        lateral = index == 1 or (index > 1 and rng.random() < 0.3)
        if not series_uid or rng.random() < 0.8:
            series_uid = _uid(rng)
        path = (
            f"../deid_png/{study['PatientID']}/{study['AccessionNumber']}/studies/"
            f"{study['StudyInstanceUid']}/series/{series_uid}/instances/{_uid(rng)}.png"
        )
        images.append(
            {
                "ImagePath": path,
                "ImageModality": modality,
                "ImageShape": list(rng.choice(_LATERAL_SHAPES if lateral else _FRONTAL_SHAPES)),
                "ImageBodyPart": _weighted(rng, _BODY_PARTS),
                "ImageViewPosition": _weighted(rng, _LATERAL_VIEWS if lateral else _FRONTAL_VIEWS),
            }
        )
    return images


def _absent(rng: random.Random) -> str | None:
    """How the real files spell a missing section: null/NaN, empty string, or the literal none."""
    return rng.choices((None, "", "none", "None"), weights=(5, 2, 1, 2))[0]


def _report(rng: random.Random, study_date: dt.date) -> dict:
    """The four GPT-segmented sections, sized like Table 1 (~5 / 3 / 32 / 11 tokens)."""
    conditions = _pick_conditions(rng)
    return {
        "Indication": rng.choice(_INDICATIONS) if rng.random() < 0.95 else _absent(rng),
        "Comparison": _comparison(rng, study_date),
        "Findings": _findings(rng, conditions) if rng.random() < 0.96 else _absent(rng),
        "Impression": _impression(rng, conditions) if rng.random() < 0.98 else _absent(rng),
    }


def _pick_conditions(rng: random.Random) -> list[tuple[str, str, str]]:
    """0-3 abnormal conditions on distinct topics; about 40 % of studies are normal."""
    k = rng.choices((0, 1, 2, 3), weights=(40, 32, 19, 9))[0]
    picked: list[tuple[str, str, str]] = []
    for condition in rng.sample(_CONDITIONS, len(_CONDITIONS)):
        if len(picked) == k:
            break
        if all(condition[0] != other[0] for other in picked):
            picked.append(condition)
    return picked


def _comparison(rng: random.Random, study_date: dt.date) -> str | None:
    """Short comparison: often "None.", sometimes absent, otherwise a prior exam with a date."""
    roll = rng.random()
    if roll < 0.35:
        return "None."
    if roll < 0.47:
        return _absent(rng)
    prior = study_date - dt.timedelta(days=rng.randint(1, 1500))
    return rng.choice(_COMPARISON_TEMPLATES).format(date=prior.strftime("%m/%d/%Y"))


def _findings(rng: random.Random, conditions: list) -> str:
    """One sentence per topic (abnormal if a condition covers it), as prose or a headed list."""
    by_topic = {topic: finding for topic, finding, _ in conditions}
    sentences = []
    for topic in _TOPIC_ORDER:
        if topic in by_topic:
            sentences.append((topic, by_topic[topic]))
        elif topic in _NORMAL_FINDINGS:
            sentences.append((topic, rng.choice(_NORMAL_FINDINGS[topic])))
    if rng.random() < 0.45:
        sentences.append(("other", rng.choice(_EXTRA_FINDINGS)))
    if rng.random() < 0.2:  # structured template: one "Header: text" line per topic
        lines = [f"{_STRUCTURED_HEADERS[topic]}: {text}" for topic, text in sentences]
        if "devices" not in by_topic:
            lines.insert(0, "Lines/tubes: None.")
        return "\n".join(lines)
    return " ".join(text for _, text in sentences)


def _impression(rng: random.Random, conditions: list) -> str:
    """Normal one-liner, or the conditions as a numbered multi-line list."""
    if not conditions:
        return rng.choice(_NORMAL_IMPRESSIONS)
    statements = [impression for _, _, impression in conditions]
    if len(statements) == 1:
        return statements[0]
    return "\n".join(f"{number}. {text}" for number, text in enumerate(statements, start=1))


def _csv_value(value: str | None) -> str:
    """Null sections become empty cells, as pandas writes NaN."""
    return "" if value is None else value


def _write_csv(path: Path, studies: list[dict]) -> None:
    """One row per study, minimal quoting (multi-line and comma-bearing text gets quoted)."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for study in studies:
            writer.writerow([_study_key(study)] + [_csv_value(study[column]) for column in CSV_COLUMNS[1:]])


def _study_key(study: dict) -> str:
    """The composite key used as JSON dict key and CSV id: p<PatientID>_a<Accession>_s<StudyInstanceUid>."""
    return f"p{study['PatientID']}_a{study['AccessionNumber']}_s{study['StudyInstanceUid']}"


def _json_record(study: dict, *, with_views: bool) -> dict:
    """Per-image lists first, then the scalars in CSV order.

    [U] The plain *_metadata.json is written without ImageViewPosition: public loaders say the
    *_view_position.json variant is the one "with proper view labels", and a per-image loader lists
    ImageViewPosition after the other image fields, so it is appended last there.
    """
    record = {field: [image[field] for image in study["images"]] for field in IMAGE_FIELDS}
    record.update({column: study[column] for column in CSV_COLUMNS[1:]})
    if with_views:
        record["ImageViewPosition"] = [image["ImageViewPosition"] for image in study["images"]]
    return record


def _write_json(path: Path, studies: list[dict], *, with_views: bool) -> None:
    """The per-study dict keyed by the composite id, in the CSV's row order."""
    payload = {_study_key(study): _json_record(study, with_views=with_views) for study in studies}
    with path.open("w", encoding="utf-8", newline="") as handle:
        json.dump(payload, handle, ensure_ascii=False)


def _write_bboxes(path: Path, rng: random.Random, studies: list[dict]) -> int:
    """[U] Label Studio JSON export (tasks -> annotations -> result) with percent-unit rectangles.

    The card only says "Label Studio coordinate format", ~400 boxes on train images.
    original_width/height are the PNG size, i.e. 25 % of ImageShape.
    """
    n_tasks = min(400, max(3, len(studies) // 20))
    tasks, n_boxes = [], 0
    for task_id, study in enumerate(rng.sample(studies, min(n_tasks, len(studies))), start=1):
        image = study["images"][0]
        rows, columns = image["ImageShape"]
        results = []
        for _ in range(rng.randint(1, 3)):
            x, y = rng.uniform(5, 60), rng.uniform(10, 60)
            results.append(
                {
                    "id": "".join(rng.choices(string.ascii_letters + string.digits, k=10)),
                    "type": "rectanglelabels",
                    "from_name": "label",
                    "to_name": "image",
                    "original_width": columns // 4,
                    "original_height": rows // 4,
                    "image_rotation": 0,
                    "value": {
                        "x": round(x, 4),
                        "y": round(y, 4),
                        "width": round(rng.uniform(8, min(40, 95 - x)), 4),
                        "height": round(rng.uniform(8, min(35, 95 - y)), 4),
                        "rotation": 0,
                        "rectanglelabels": ["Interstitial Pattern"],
                    },
                }
            )
        n_boxes += len(results)
        tasks.append(
            {
                "id": task_id,
                "data": {"image": image["ImagePath"], "study_id": _study_key(study)},
                "annotations": [{"id": task_id, "result": results}],
            }
        )
    with path.open("w", encoding="utf-8", newline="") as handle:
        json.dump(tasks, handle, ensure_ascii=False, indent=2)
    return n_boxes


def _section_present(text: str | None) -> bool:
    """The counting rule used in the truth: present unless null, blank, or the literal "none"."""
    return text is not None and text.strip() != "" and text.strip().lower() != "none"


def _age_bucket(dicom_age: str) -> str:
    """Table 2 bucket of a DICOM AS age: [0,20), [20,40), [40,60), [60,80), 80+."""
    value, unit = int(dicom_age[:3]), dicom_age[3]
    years = value / {"Y": 1, "M": 12, "W": 52, "D": 365}[unit]
    return AGE_BUCKETS[min(4, int(years // 20))]


def _truth(studies_by_split: dict[str, list[dict]], boxes: int, seed: int) -> dict:
    """Counts the generator knows by construction, for tests to check against a recount."""
    splits = {}
    for split, studies in studies_by_split.items():
        sections = {name: {"studies_present": 0, "tokens": 0} for name in SECTIONS}
        sex = dict.fromkeys(SEX_VALUES, 0)
        ages = dict.fromkeys(AGE_BUCKETS, 0)
        for study in studies:
            for name in SECTIONS:
                if _section_present(study[name]):
                    sections[name]["studies_present"] += 1
                    sections[name]["tokens"] += len(study[name].split())
            sex[study["PatientSex"]] += 1
            ages[_age_bucket(study["PatientAge"])] += 1
        splits[split] = {
            "patients": len({study["PatientID"] for study in studies}),
            "studies": len(studies),
            "images": sum(len(study["images"]) for study in studies),
            "sections": sections,
            "sex": sex,
            "age_bucket": ages,
        }
    return {
        "dataset": "rexgradient-160k",
        "seed": seed,
        "splits": splits,
        "total": {key: sum(s[key] for s in splits.values()) for key in ("patients", "studies", "images")},
        "interstitial_boxes": boxes,
        "counting": {
            "sections": "present = not null, not blank, not the literal 'none' (any case); "
            "tokens = str.split() count over present sections",
            "sex_and_age": "per study (one CSV row), raw PatientSex values; age buckets from PatientAge",
        },
    }
