"""The canonical tables every dataset adapter must produce.

One definition serves three readers: the adapters (which columns to fill, which words are
allowed), the Parquet store (the Arrow schema, sort keys) and the catalog (a description for
every column). Vocabularies are closed on purpose: a value outside them is a data problem the
quality checks must catch, not something to store silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from .errors import UnknownName

SCHEMA_VERSION = 1

# --- closed vocabularies -----------------------------------------------------------------
SEX = ("F", "M", "U")
SPLITS = ("train", "valid", "test", "unassigned")
VIEW_POSITIONS = ("PA", "AP", "AP_SUPINE", "LATERAL", "LL", "RL", "OTHER", "UNKNOWN")
FRONTAL_VIEWS = ("PA", "AP", "AP_SUPINE")
LABEL_VALUES = (1, 0, -1)
LABELERS = (
    "chexpert",
    "chexbert",
    "negbio",
    "nih_nlp",
    "radiologist",
    "padchest",
    "mesh",
    "qba_scene_graph",
)
ANSWER_TYPES = ("main_answer", "details", "related_information")
QUALITY_GRADES = ("A++", "A+", "A", "B", "C", "D", "unrated")
DEMOGRAPHIC_ATTRIBUTES = ("age_bucket", "sex", "race", "ethnicity")
AGE_BUCKETS = ("0-20", "20-40", "40-60", "60-80", "80+", "unknown", "not_recorded")
# Race and ethnicity, harmonized to the OMB categories (docs/datasets.md, "Race and ethnicity"):
# `unknown` = the source records the field and says unknown / declined / blank for this patient;
# `not_recorded` = the source has no such field at all. The source's word stays in race_source.
RACES = (
    "white",
    "black",
    "asian",
    "american_indian_alaska_native",
    "native_hawaiian_pacific_islander",
    "other",
    "multiple",
    "unknown",
    "not_recorded",
)
ETHNICITIES = ("hispanic", "not_hispanic", "unknown", "not_recorded")
NOT_RECORDED = "not_recorded"

VOCABULARIES: dict[str, tuple] = {
    "sex": SEX,
    "split": SPLITS,
    "view_position": VIEW_POSITIONS,
    "label_value": LABEL_VALUES,
    "labeler": LABELERS,
    "answer_type": ANSWER_TYPES,
    "quality_grade": QUALITY_GRADES,
    "demographic_attribute": DEMOGRAPHIC_ATTRIBUTES,
    "race": RACES,
    "ethnicity": ETHNICITIES,
}


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    description: str
    nullable: bool = True
    vocabulary: str | None = None  # key into VOCABULARIES
    default: object = None  # the value when an adapter does not fill the column (else null)

    def field(self) -> pa.Field:
        meta = {"description": self.description}
        if self.vocabulary:
            meta["vocabulary"] = self.vocabulary
        return pa.field(self.name, self.type, nullable=self.nullable, metadata=meta)


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    key: tuple[str, ...]  # unique within a dataset partition
    columns: tuple[Column, ...]
    sort_by: tuple[str, ...] = ()  # physical order; defaults to the key
    derived: bool = False  # computed from other tables, not read from sources
    subpartition: str | None = None  # second Hive key for very large tables
    recluster: bool = False  # streamed rows are re-sorted into sort_by after staging (see recluster.py)
    extra: dict = field(default_factory=dict)

    @property
    def schema(self) -> pa.Schema:
        return pa.schema(
            [c.field() for c in self.columns], metadata={"table": self.name, "schema_version": str(SCHEMA_VERSION)}
        )

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise UnknownName(f"{self.name} has no column {name!r}")

    @property
    def order(self) -> tuple[str, ...]:
        return self.sort_by or self.key


def _c(name, type_, description, nullable=True, vocabulary=None, default=None) -> Column:
    return Column(name, type_, description, nullable, vocabulary, default)


S, F64, F32, I64, I32, I16, I8, B = (
    pa.string(),
    pa.float64(),
    pa.float32(),
    pa.int64(),
    pa.int32(),
    pa.int16(),
    pa.int8(),
    pa.bool_(),
)
# Every source field that has no canonical column lands in `source_attributes`, keyed by the source's own
# column name (or JSON path), the value as written (as text). Each adapter declares where every native
# column goes in its SOURCE_FIELDS (tests/test_source_columns.py checks it against the native headers).
ATTRIBUTES = pa.map_(pa.string(), pa.string())


def _attributes(what: str) -> Column:
    return _c(
        "source_attributes",
        ATTRIBUTES,
        f"Every source field of the {what} that has no canonical column, as MAP(VARCHAR, VARCHAR): key = "
        "the source's field name, value = the value as written (blank values left out). Read one with "
        "source_attributes['Field'].",
    )


DATASET = _c("dataset", S, "Dataset id, the partition key (e.g. nih_cxr14, chexpert).", nullable=False)
PATIENT_ID = _c("patient_id", S, "Patient id as the source writes it.", nullable=False)
STUDY_ID = _c(
    "study_id",
    S,
    "Study id as the source writes it (made unique within the dataset where the source numbers studies per patient).",
    nullable=False,
)
IMAGE_UID = _c(
    "image_uid",
    S,
    "The image file's identity across datasets: '<dataset the file comes from>:<image_id>'. "
    "A dataset that links to another shares its images' uid (MIMIC-Ext-CXR-QBA's images "
    "are MIMIC-CXR's, mimic_cxr:<dicom_id>; CheXpert Plus's are CheXpert's), so "
    "count(DISTINCT image_uid) over pooled datasets counts each file once.",
    nullable=False,
)
SPLIT = _c(
    "split",
    S,
    "Official split: train, valid, test, or unassigned when the source defines none.",
    nullable=False,
    vocabulary="split",
)

PATIENTS = Table(
    "patients",
    "One row per patient: sex, race, ethnicity and birth year as far as the source tells.",
    key=("patient_id",),
    columns=(
        DATASET,
        PATIENT_ID,
        _c("sex", S, "Harmonized sex: F, M or U (unknown or not given).", nullable=False, vocabulary="sex"),
        _c("sex_source", S, "Sex exactly as the source wrote it, before harmonizing."),
        _c(
            "race",
            S,
            "Harmonized race (OMB categories): white, black, asian, american_indian_alaska_native, "
            "native_hawaiian_pacific_islander, other, multiple, unknown (the source records race and "
            "says unknown, declined or nothing for this patient) or not_recorded (the source has no "
            "race field).",
            vocabulary="race",
            default=NOT_RECORDED,
        ),
        _c(
            "ethnicity",
            S,
            "Harmonized ethnicity: hispanic, not_hispanic, unknown (recorded as unknown or blank) "
            "or not_recorded (the source has no ethnicity field).",
            vocabulary="ethnicity",
            default=NOT_RECORDED,
        ),
        _c("birth_year", I16, "Year of birth when the source gives it (shifted as the source shifts dates)."),
        _c(
            "race_source",
            S,
            "Race exactly as the source wrote it, before harmonizing (null when the source has "
            "no race field or left it blank).",
        ),
        _c("ethnicity_source", S, "Ethnicity exactly as the source wrote it, before harmonizing."),
        _c(
            "death_date",
            pa.date32(),
            "Date of death when the source gives it (MIMIC-IV dod, shifted as its dates are).",
        ),
        _attributes("patient"),
    ),
)

STUDIES = Table(
    "studies",
    "One row per imaging study (an exam: one or more images read together in one report).",
    key=("study_id",),
    sort_by=("patient_id", "study_id"),
    columns=(
        DATASET,
        STUDY_ID,
        PATIENT_ID,
        SPLIT,
        _c("study_date", pa.date32(), "Study date as the source gives it (often shifted for de-identification)."),
        _c("age_years", F32, "Patient age in years at this study, derived from the source's age fields."),
        _c("age_source", S, "Age exactly as the source wrote it (e.g. '068Y', '57'), before converting to years."),
        _c("weight_kg", F32, "Patient weight in kilograms at the study, when the source gives it."),
        _c("institution", S, "Institution or site name, when the source gives it."),
        _c("manufacturer", S, "Imaging equipment manufacturer, when the source gives it."),
        _c(
            "study_time",
            S,
            "Time of day of the study as ISO text HH:MM:SS[.fff] (Delta Lake has no TIME type: "
            "CAST(study_time AS TIME) in DuckDB), when the source gives it (MIMIC-CXR StudyTime, "
            "IU Study Time).",
        ),
        _c(
            "follow_up_number",
            I32,
            "The source's own visit or follow-up number of the study (NIH `Follow-up #`, "
            "0 = first), when it gives one.",
        ),
        _c(
            "visit_order",
            I32,
            "1 for the patient's first study in the dataset, 2 for the next, ...: by date and "
            "time where the source gives them, else by the source's follow-up number or "
            "relative timestamps; ties broken by study_id. Null when the source gives no "
            "order.",
        ),
        _c(
            "days_since_first",
            F64,
            "Days since the patient's first study in the dataset (fractional when "
            "times are known); null when the source gives no dates.",
        ),
        _c(
            "days_since_previous",
            F64,
            "Days since the patient's previous study (null for the first study, or when the source gives no dates).",
        ),
        _c(
            "procedure",
            S,
            "The procedure as the source names it (MIMIC-CXR PerformedProcedureStepDescription, QBA procedure).",
        ),
        _c("pediatric", B, "True when the source flags the patient as a child (PadChest `Pediatric`)."),
        _attributes("study"),
    ),
)

IMAGES = Table(
    "images",
    "One row per image file.",
    key=("image_id",),
    sort_by=("patient_id", "study_id", "image_id"),
    columns=(
        DATASET,
        _c("image_id", S, "Image id as the source writes it (file name stem or DICOM id).", nullable=False),
        IMAGE_UID,
        STUDY_ID,
        PATIENT_ID,
        SPLIT,
        _c(
            "view_position",
            S,
            "Harmonized view: PA, AP, AP_SUPINE, LATERAL, LL, RL, OTHER, UNKNOWN.",
            nullable=False,
            vocabulary="view_position",
        ),
        _c("view_source", S, "View exactly as the source wrote it, before harmonizing."),
        _c("is_frontal", B, "True for frontal projections (PA, AP, AP supine)."),
        _c("width", I32, "Image width in pixels (of the original image where the source gives it)."),
        _c("height", I32, "Image height in pixels (of the original image where the source gives it)."),
        _c("pixel_spacing_x", F32, "Horizontal pixel spacing in mm."),
        _c("pixel_spacing_y", F32, "Vertical pixel spacing in mm."),
        _c("path", S, "Image file path relative to the dataset root, as laid out by the source."),
        _c(
            "patient_orientation",
            S,
            "DICOM Patient Orientation of the image as the source writes it (e.g. "
            "L\\F; MIMIC-CXR's patient-orientation code meaning, e.g. Erect).",
        ),
        _c(
            "projection_method",
            S,
            "How the view was established, in the source's words (PadChest "
            "MethodProjection: 'Manual review of DICOM fields', ...).",
        ),
        _c("view_code_meaning", S, "The DICOM view code sequence's meaning (MIMIC-CXR ViewCodeSequence), when given."),
        _attributes("image"),
    ),
)

REPORTS = Table(
    "reports",
    "One row per study report, split into sections, with token counts per section.",
    key=("study_id",),
    sort_by=("patient_id", "study_id"),
    columns=(
        DATASET,
        STUDY_ID,
        PATIENT_ID,
        _c("indication", S, "INDICATION / HISTORY / reason for exam section, null when absent."),
        _c("comparison", S, "COMPARISON section, null when absent."),
        _c("findings", S, "FINDINGS section, null when absent."),
        _c("impression", S, "IMPRESSION / conclusion section, null when absent."),
        _c("full_text", S, "The whole report text as the source gives it, every section kept."),
        _c("language", S, "ISO 639-1 language of the report text (en, es)."),
        _c("tokens_indication", I32, "Tokens in the indication section (see warehouse.tokens)."),
        _c("tokens_comparison", I32, "Tokens in the comparison section (see warehouse.tokens)."),
        _c("tokens_findings", I32, "Tokens in the findings section (see warehouse.tokens)."),
        _c("tokens_impression", I32, "Tokens in the impression section (see warehouse.tokens)."),
        _c("source_file", S, "File (or archive member) the report was read from."),
    ),
)

LABELS = Table(
    "labels",
    "One row per (subject, raw label, labeler, method): a finding stated positive, negative or uncertain.",
    key=("study_id", "image_id", "labeler", "raw_label", "method", "reader"),
    sort_by=("finding", "study_id", "image_id", "labeler", "raw_label", "method", "reader"),
    columns=(
        DATASET,
        STUDY_ID,
        _c("image_id", S, "Image the label belongs to; null for study-level labels."),
        _c(
            "finding",
            S,
            "Harmonized finding id (see the findings vocabulary), e.g. pleural_effusion; null when the "
            "raw label maps to no finding (see catalog_unmapped_labels).",
        ),
        _c(
            "raw_label",
            S,
            "The label exactly as the source names it (e.g. Effusion, Pleural Effusion).",
            nullable=False,
        ),
        _c(
            "value",
            I8,
            "1 positive, 0 negative, -1 uncertain. Unmentioned findings have no row.",
            nullable=False,
            vocabulary="label_value",
        ),
        _c(
            "labeler",
            S,
            "Which algorithm or reader produced the label (chexpert, negbio, nih_nlp, ...).",
            nullable=False,
            vocabulary="labeler",
        ),
        _c(
            "method",
            S,
            "How the labeler produced it, in the source's words, when the source says (PadChest "
            "MethodLabel Physician / RNN_model; the report section CheXbert read).",
        ),
        _c(
            "locations",
            pa.list_(S),
            "Where the finding is, as the source localizes it (PadChest 'loc left', …); null when not localized.",
        ),
        _c(
            "reader",
            S,
            "The individual reader who gave the label, as the source names them (VinDr-CXR rad_id "
            "R1…R17); null for a single labeler's or an adjudicated (consensus) label.",
        ),
        _c(
            "label_split",
            S,
            "The split this label set itself assigns the subject to, when it defines one apart "
            "from the dataset's split (the Google 2019 NIH expert labels' Set Id: val -> valid, "
            "test); null otherwise.",
            vocabulary="split",
        ),
    ),
)

BOXES = Table(
    "boxes",
    "One row per bounding box drawn on an image for a finding.",
    key=("image_id", "raw_label", "box_index"),
    columns=(
        DATASET,
        _c("image_id", S, "Image the box is drawn on.", nullable=False),
        _c("box_index", I16, "Position of the box among the image's boxes in the source file.", nullable=False),
        _c("finding", S, "Harmonized finding id (see labels.finding); null when the raw label maps to none."),
        _c(
            "raw_label", S, "The box label exactly as the source names it (NIH writes Infiltrate here).", nullable=False
        ),
        _c("x", F32, "Left edge in pixels of the source's coordinate space."),
        _c("y", F32, "Top edge in pixels."),
        _c("w", F32, "Width in pixels."),
        _c("h", F32, "Height in pixels."),
        _c("source", S, "Who drew the box (e.g. radiologist)."),
        _c(
            "reader",
            S,
            "The individual reader who drew the box, as the source names them (VinDr-CXR rad_id); "
            "null when the source does not say.",
        ),
        _c(
            "mask_rle",
            S,
            "The region's segmentation mask as the source run-length encodes it, byte for byte "
            "(SIIM-ACR EncodedPixels); null for a plain box. x, y, w, h are null when only the mask "
            "is given.",
        ),
    ),
)

QA_QUESTIONS = Table(
    "qa_questions",
    "One row per visual question-answer pair.",
    key=("study_id", "question_id"),
    sort_by=("question_type", "quality_grade", "study_id", "question_id"),
    subpartition="split",
    recluster=True,
    columns=(
        DATASET,
        STUDY_ID,
        PATIENT_ID,
        SPLIT,
        _c("question_id", S, "Question id (a template name + index; unique only within a study).", nullable=False),
        _c("question_type", S, "Template type, e.g. B01_describe_all.", nullable=False),
        _c("question_strategy", S, "Generation strategy: indication, abnormal, region_abnormal, finding."),
        _c("question", S, "The question text."),
        _c(
            "quality_grade",
            S,
            "Overall grade A++, A+, A, B, C, D or unrated.",
            nullable=False,
            vocabulary="quality_grade",
        ),
        _c("fine_tuning", B, "In the fine-tuning set: grade A or better, on a study with a frontal image."),
        _c("pre_training", B, "In the pre-training set: grade B or better, on a study with a frontal image."),
        _c("contains_report_answers", B, "Whether any answer is derived from report sentences."),
        _c("contains_template_answers", B, "Whether any answer is template-based."),
        _c("num_answers", I32, "Number of sub-answers of the question (all levels)."),
    ),
)

QA_ANSWERS = Table(
    "qa_answers",
    "One row per sub-answer, the answer hierarchy flattened.",
    key=("study_id", "question_id", "answer_id"),
    sort_by=("study_id", "question_id", "answer_id"),
    subpartition="split",
    columns=(
        DATASET,
        STUDY_ID,
        SPLIT,
        _c("question_id", S, "Question the answer belongs to.", nullable=False),
        _c("answer_id", S, "Answer id, unique within the question.", nullable=False),
        _c("parent_answer_id", S, "Parent answer for nested sub-answers, null at the top level."),
        _c("answer_level", I16, "0 for top-level answers, >0 for each nesting level."),
        _c("answer_type", S, "main_answer, details or related_information.", vocabulary="answer_type"),
        _c("text", S, "The answer sentence."),
        _c("positiveness", S, "pos or neg, as the source tags the answer."),
        _c("certainty", S, "Certainty tag of the answer."),
        _c("entities", pa.list_(S), "Finding entities the answer is about."),
        _c("regions", pa.list_(S), "Anatomical regions the answer is about."),
        _c("quality_grade", S, "Grade of this sub-answer.", vocabulary="quality_grade"),
    ),
)

QA_ANSWER_BOXES = Table(
    "qa_answer_boxes",
    "One row per bounding box of an answer on an image.",
    key=("study_id", "question_id", "answer_id", "image_id", "box_index"),
    sort_by=("study_id", "question_id", "answer_id", "image_id", "box_index"),
    subpartition="split",
    columns=(
        DATASET,
        STUDY_ID,
        SPLIT,
        _c("question_id", S, "Question the answer belongs to.", nullable=False),
        _c("answer_id", S, "Answer the box localizes.", nullable=False),
        _c("image_id", S, "Image the box is drawn on.", nullable=False),
        _c("box_index", I16, "Position of the box in the answer's list for this image.", nullable=False),
        _c("region", S, "Region the box outlines (localization reference id)."),
        _c("x1", F32, "Left edge in pixels."),
        _c("y1", F32, "Top edge in pixels."),
        _c("x2", F32, "Right edge in pixels."),
        _c("y2", F32, "Bottom edge in pixels."),
    ),
)

QUARANTINE = Table(
    "quarantine",
    "Source rows an adapter could not read, kept with the file, row, column and reason.",
    key=("source_file", "line_number", "row_number", "column_name", "reason"),
    columns=(
        DATASET,
        _c("target_table", S, "Canonical table the row was meant for."),
        _c("source_file", S, "File (or archive member) the row came from.", nullable=False),
        _c("row_number", I64, "1-based data record in the file (header excluded), when known."),
        _c("line_number", I64, "1-based physical line in the file, when rows are one line each."),
        _c("column_name", S, "Column whose value could not be read (empty when the whole row is bad).", nullable=False),
        _c("value", S, "The offending value as written."),
        _c("reason", S, "Why the row was rejected.", nullable=False),
        _c("raw_record", S, "The whole source row, so nothing is lost."),
    ),
)

SPLIT_STATS = Table(
    "split_stats",
    "Per dataset and split: studies, images, patients and mean report tokens per section "
    "(the shape of ReXGradient-160K's Table 1). Computed on all rows, never a sample.",
    key=("split",),
    derived=True,
    columns=(
        DATASET,
        SPLIT,
        _c("studies", I64, "Studies in the split."),
        _c("images", I64, "Images in the split."),
        _c("patients", I64, "Distinct patients in the split."),
        _c("reports", I64, "Studies with a report."),
        _c("mean_tokens_indication", F64, "Mean tokens of the indication section over reports that have it."),
        _c("mean_tokens_comparison", F64, "Mean tokens of the comparison section over reports that have it."),
        _c("mean_tokens_findings", F64, "Mean tokens of the findings section over reports that have it."),
        _c("mean_tokens_impression", F64, "Mean tokens of the impression section over reports that have it."),
    ),
)

DEMOGRAPHICS = Table(
    "demographics",
    "Per dataset, split, attribute and bucket: patients, studies and percent "
    "(the shape of ReXGradient-160K's Table 2).",
    key=("split", "attribute", "bucket"),
    derived=True,
    columns=(
        DATASET,
        SPLIT,
        _c("attribute", S, "age_bucket, sex, race or ethnicity.", nullable=False, vocabulary="demographic_attribute"),
        _c(
            "bucket",
            S,
            "The bucket: an age range (0-20 … 80+), a sex, or a harmonized race/ethnicity word. "
            "`not_recorded` = the source has no such field; `unknown` = it has one and records "
            "unknown (or nothing readable) for these patients or studies.",
            nullable=False,
        ),
        _c("n_patients", I64, "Distinct patients in the bucket."),
        _c("n_studies", I64, "Studies in the bucket (age is per study, so age buckets count studies)."),
        _c(
            "percent", F64, "Share of the split in this bucket, in percent (of studies for age, of patients otherwise)."
        ),
    ),
)

IMAGE_LABELS = Table(
    "image_labels",
    "One row per image and label, with the image's split and view and its patient's sex and age: "
    "the flat table for cohort selection (labels given per study apply to each of its images).",
    key=("image_id", "labeler", "raw_label", "method", "reader"),
    derived=True,
    sort_by=("finding", "value", "is_frontal", "image_id", "labeler", "raw_label", "method", "reader"),
    columns=(
        DATASET,
        _c("image_id", S, "The image.", nullable=False),
        IMAGE_UID,
        STUDY_ID,
        PATIENT_ID,
        SPLIT,
        _c("view_position", S, "Harmonized view (see images.view_position).", vocabulary="view_position"),
        _c("is_frontal", B, "True for frontal projections (PA, AP, AP supine)."),
        _c("sex", S, "The patient's harmonized sex: F, M or U.", vocabulary="sex"),
        _c("age_years", F32, "The patient's age in years at the image's study."),
        _c("finding", S, "Harmonized finding id (see labels.finding); null when the raw label maps to none."),
        _c("raw_label", S, "The label exactly as the source names it.", nullable=False),
        _c("value", I8, "1 positive, 0 negative, -1 uncertain.", nullable=False, vocabulary="label_value"),
        _c("labeler", S, "Which algorithm or reader produced the label.", nullable=False, vocabulary="labeler"),
        _c("method", S, "How the labeler produced it, when the source says (see labels.method)."),
        _c("reader", S, "The individual reader, for multi-reader sets (see labels.reader); null otherwise."),
    ),
)

_AGREEMENT_CI = "NULL when n < 4 or the standard error is 0 or undefined (see sql/stats/label_agreement.sql)."

LABEL_AGREEMENT = Table(
    "label_agreement",
    "Agreement between labelers that label the same images or studies, per finding: Cohen's "
    "kappa, Matthews' correlation and F1 for each pair of labelers, Fleiss' kappa for a "
    "multi-reader set, each with a 95 % interval. Computed on all rows (sql/stats/"
    "label_agreement.sql says how units are matched and uncertain labels handled).",
    key=("unit", "labeler_a", "method_a", "dataset_b", "labeler_b", "method_b", "finding", "statistic"),
    derived=True,
    columns=(
        DATASET,
        _c(
            "unit",
            S,
            "What is compared: 'image' when both label sets label images, else 'study' (image labels "
            "rolled up to their study: positive if any image is).",
            nullable=False,
        ),
        _c(
            "labeler_a",
            S,
            "The first labeler (of this dataset; for 'fleiss' the multi-reader labeler).",
            nullable=False,
            vocabulary="labeler",
        ),
        _c(
            "method_a",
            S,
            "labeler_a's method (labels.method, e.g. the report section CheXbert read); each method "
            "is its own label set. Null when the labels name none.",
        ),
        _c("labeler_b", S, "The second labeler, the reference for fp/fn; null for 'fleiss'.", vocabulary="labeler"),
        _c("method_b", S, "labeler_b's method; null when its labels name none, and for 'fleiss'."),
        _c(
            "dataset_b",
            S,
            "The dataset labeler_b's labels belong to: this one, or the one it links to (CheXpert "
            "for CheXpert Plus, MIMIC-CXR for MIMIC-Ext-CXR-QBA); null for 'fleiss'.",
        ),
        _c(
            "finding",
            S,
            "Harmonized finding compared. A labeler that does not name it is read through the findings "
            "below it (NIH nodule or mass for lung_lesion): positive if any of them is.",
            nullable=False,
        ),
        _c(
            "statistic",
            S,
            "'cohen' for a pair of labelers, 'fleiss' for the readers of one multi-reader set "
            "(labels.reader, VinDr-CXR).",
            nullable=False,
        ),
        _c(
            "n",
            I64,
            "Units compared: labelled by both (cohen; a missing row for the finding on a unit the labeler "
            "labelled counts as negative) or read by 2 or more readers (fleiss), uncertain ones left out.",
        ),
        _c("n_readers", I64, "Fleiss: readers per unit (the most, when it varies). Null for 'cohen'."),
        _c("tp", I64, "Units both labelers call positive (cohen)."),
        _c("fp", I64, "Units labeler_a calls positive and labeler_b negative (cohen)."),
        _c("fn", I64, "Units labeler_a calls negative and labeler_b positive (cohen)."),
        _c("tn", I64, "Units both call negative (cohen)."),
        _c(
            "prevalence_a",
            F64,
            "Share of the n units labeler_a calls positive, 0..1; fleiss: the share of positive reads over all reads.",
        ),
        _c("prevalence_b", F64, "Share of the n units labeler_b calls positive, 0..1; null for 'fleiss'."),
        _c(
            "kappa",
            F64,
            "Cohen's kappa (cohen) or Fleiss' kappa for a binary rating with a varying number of "
            "readers per unit (fleiss; Fleiss, Levin & Paik 2003). Null when undefined (chance "
            "agreement 1: one value only).",
        ),
        _c(
            "kappa_low",
            F64,
            "Lower 95 % bound of kappa: Wald with the Fleiss-Cohen-Everitt (1969) standard error "
            "(cohen), or the jackknife over units (fleiss); clipped to -1. " + _AGREEMENT_CI,
        ),
        _c("kappa_high", F64, "Upper 95 % bound of kappa (as kappa_low), clipped to 1. " + _AGREEMENT_CI),
        _c(
            "mcc",
            F64,
            "Matthews' correlation coefficient (the phi coefficient of the 2x2 table; the "
            "MIMIC-Ext-CXR-QBA paper's metric). Null when a margin is empty, and for 'fleiss'.",
        ),
        _c(
            "mcc_low",
            F64,
            "Lower 95 % bound of mcc: Fisher z, tanh(atanh(mcc) - 1.96/sqrt(n-3)). NULL when n < 4 or |mcc| = 1.",
        ),
        _c("mcc_high", F64, "Upper 95 % bound of mcc: tanh(atanh(mcc) + 1.96/sqrt(n-3)). NULL as mcc_low."),
        _c(
            "f1",
            F64,
            "F1 = 2tp / (2tp + fp + fn) (symmetric in a and b). Null when neither labeler has a positive, "
            "and for 'fleiss'.",
        ),
        _c(
            "f1_low",
            F64,
            "Lower 95 % bound of f1: Wald with the delta-method standard error sqrt(4 tp (fp+fn) "
            "(tp+fp+fn)) / (2tp+fp+fn)^2, clipped to 0. NULL when n < 4, tp = 0 or fp + fn = 0.",
        ),
        _c("f1_high", F64, "Upper 95 % bound of f1 (as f1_low), clipped to 1."),
        _c(
            "n_excluded_uncertain",
            I64,
            "Cohen: units left out because either labeler is uncertain (-1) there. Fleiss: uncertain reads dropped.",
        ),
    ),
)

SOURCE_TABLES: tuple[Table, ...] = (
    PATIENTS,
    STUDIES,
    IMAGES,
    REPORTS,
    LABELS,
    BOXES,
    QA_QUESTIONS,
    QA_ANSWERS,
    QA_ANSWER_BOXES,
    QUARANTINE,
)
DERIVED_TABLES: tuple[Table, ...] = (SPLIT_STATS, DEMOGRAPHICS, IMAGE_LABELS, LABEL_AGREEMENT)
TABLES: dict[str, Table] = {t.name: t for t in SOURCE_TABLES + DERIVED_TABLES}


def table(name: str) -> Table:
    try:
        return TABLES[name]
    except KeyError:
        raise UnknownName(f"unknown table {name!r}; known: {', '.join(TABLES)}") from None


_DUCKDB_TYPES = {
    pa.string(): "VARCHAR",
    pa.float64(): "DOUBLE",
    pa.float32(): "FLOAT",
    pa.int64(): "BIGINT",
    pa.int32(): "INTEGER",
    pa.int16(): "SMALLINT",
    pa.int8(): "TINYINT",
    pa.bool_(): "BOOLEAN",
    pa.date32(): "DATE",
    pa.list_(pa.string()): "VARCHAR[]",
    ATTRIBUTES: "MAP(VARCHAR, VARCHAR)",
}


def duckdb_type(arrow_type: pa.DataType) -> str:
    """The DuckDB type name of a schema column (used for empty views and docs)."""
    return _DUCKDB_TYPES[arrow_type]
