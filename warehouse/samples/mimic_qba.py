"""Format-faithful, streaming sample generator for MIMIC-Ext-CXR-QBA 1.0.0 (PhysioNet, credentialed).

The real dataset cannot be downloaded here, so this module writes a scalable copy of its native
files, laid out as the PhysioNet page (physionet.org/content/mimic-ext-cxr-qba/1.0.0) and
docs/datasets.md section 7 describe:

    qa.zip                  qa/p1x/p1xxxxxxx/sxxxxxxxx.qa.json            (one member per study)
    scene_data.zip          scene_data/p1x/p1xxxxxxx/sxxxxxxxx.{scene_graph,metadata}.json
    metadata/               {patient,study,image,question,question_image,answer,answer_image}
                            _metadata.{csv.gz,parquet} + dataset_info.json
    quality_mappings.csv    raw integer quality code -> label / grade
    exports/{A,B}_frontal/  metadata/ (+ subset folders), scene_graph.zip, qa.zip

The cohort (patients, studies, images, splits) comes from the shared MIMIC plan, so QBA questions
join to the MIMIC-CXR sample. Everything streams: each study's JSON is handed to the writer as soon
as it is built, and metadata rows go out in bounded batches. A separate writer process does all
compression and Parquet / gzip-CSV writing, so it overlaps generation on the 2-core box (threads
did not: they spent their time re-acquiring the GIL). Peak memory stays flat with scale.

Per-study randomness comes from random.Random(f"mimic-qba:{seed}:{study_id}"), zip members carry
a fixed date, gzip headers have mtime 0 and no name, and Parquet is written with fixed settings, so
the same seed and cohort give byte-identical files.

Quality codes (chosen here; the real integer table is [U] per docs/datasets.md, "read quality_mappings.csv"):
- every criterion is coded 0..n-1 from worst to best option ("larger = better", per the page);
- the overall `rating` is D=0, C=1, B=2, A=3, A+=4, A++=5 and -1 = unrated (evaluation failed).
  -1 is also used for the LLM criteria of unrated questions, so every quality column is a plain
  int64 without nulls and "min over answers" propagates "unrated" naturally.
"""

from __future__ import annotations

import gzip
import itertools
import json
import pickle
import random
import subprocess
import sys
import traceback
import zipfile
from collections import Counter
from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from warehouse.samples.cohort import MIMIC_SPLITS, StudySpec, plan_mimic_cohort

# ----------------------------------------------------------------------------------------------
# Quality scales
# ----------------------------------------------------------------------------------------------
GRADES = ("D", "C", "B", "A", "A+", "A++")  # overall rating code = index into this tuple
UNRATED = -1
GRADE_CODE = {grade: code for code, grade in enumerate(GRADES)}
_B, _A, _AP, _APP = (GRADE_CODE[g] for g in ("B", "A", "A+", "A++"))

# Scene-graph criteria: options listed worst -> best, code = position (page section 3a).
SCENE_GRAPH_CRITERIA: dict[str, tuple[tuple[str, str], ...]] = {
    "region_quality": (
        ("NO_REGIONS", "B"),
        ("DEFAULT_REGIONS_ONLY", "B"),
        ("CONTAINS_DEFAULT_REGIONS", "A"),
        ("CONTAINS_NON_RESOLVED_REGIONS", "A"),
        ("RESOLVED_REGIONS_ONLY", "A++"),
    ),
    "entity_quality": (
        ("NO_ENTITIES", "B"),
        ("CONTAINS_NON_RESOLVED_ENTITIES", "A"),
        ("RESOLVED_ENTITIES_ONLY", "A++"),
    ),
    "sentence_name_quality": (
        ("CHANGE_IN_SENTENCE_OR_NAME", "B"),
        ("UNDERSCORES_IN_SENTENCE_OR_NAME", "A"),
        ("NO_ISSUES", "A++"),
    ),
    "change_quality": (
        ("CHANGE_SENTENCE_REMOVED", "B"),
        ("UNDERSCORES_IN_CHANGE_SENTENCE", "A"),
        ("CONTAINS_NON_RESOLVED_CHANGES", "A"),
        ("NO_ISSUES", "A++"),
    ),
    "issue_level": (
        ("DISCARDED", "D"),
        ("NON_INTERPRETABLE", "C"),
        ("MOSTLY_INTERPRETABLE", "B"),
        ("IGNORABLE", "A"),
        ("FIXABLE", "A+"),
        ("NO_ISSUES", "A++"),
    ),
    "localization_quality": (
        ("NO_LOCALIZATION", "B"),
        ("FALLBACK_LOCALIZATION", "B"),
        ("INCOMPLETE_LOCALIZATION", "A"),
        ("BBOX_LOCALIZATION", "A++"),
        ("BBOX_AND_MASK_LOCALIZATION", "A++"),
    ),
}
NO_LOC, FALLBACK_LOC, INCOMPLETE_LOC, BBOX_LOC, BBOX_MASK_LOC = range(5)

# QA criteria (LLM judge). Third item: the grade when the sub-answer is related_information, which
# only differs for relevance (page: "RELEVANT_MAIN_ANSWER for related info (A)", "RELATED_INFO for
# main answer or details (A+)").
QA_CRITERIA: dict[str, tuple[tuple[str, str, str], ...]] = {
    "entailment": (
        ("NON_ALIGNED_CONTRADICTING", "D", "D"),
        ("NON_ALIGNED_MISLEADING", "C", "C"),
        ("NON_ALIGNED_NON_INFERABLE", "B", "B"),
        ("ALIGNED_GENERAL_STATEMENT", "A", "A"),
        ("ALIGNED_NEGATIVE_NOT_MENTIONED", "A", "A"),
        ("ALIGNED_INFERABLE", "A++", "A++"),
        ("ALIGNED_MENTIONED", "A++", "A++"),
    ),
    "relevance": (
        ("IRRELEVANT_INFO", "A", "A"),
        ("REDUNDANT_INFO", "A", "A"),
        ("RELATED_INFO", "A+", "A++"),
        ("RELEVANT_MAIN_ANSWER", "A++", "A"),
    ),
    "completeness": (
        ("INCOMPLETE_MISLEADING", "C", "C"),
        ("INCOMPLETE_NON_MISLEADING", "B", "B"),
        ("NOT_ANSWERED", "B", "B"),
        ("DETAILS_MISSING", "A+", "A+"),
        ("FULLY_COMPLETE", "A++", "A++"),
    ),
    "question_clarity": (
        ("UNANSWERABLE", "C", "C"),
        ("UNRELATED_TO_CHEST_XRAY", "B", "B"),
        ("UNCLEAR_QUESTION", "B", "B"),
        ("GRAMMATICAL_ERRORS", "A", "A"),
        ("UNUSUAL_SENTENCE_STRUCTURE", "A", "A"),
        ("OPTIMAL", "A++", "A++"),
    ),
    "answer_clarity": (
        ("NOT_UNDERSTANDABLE", "C", "C"),
        ("UNCLEAR_ANSWER", "B", "B"),
        ("GRAMMATICAL_ERRORS", "A", "A"),
        ("UNUSUAL_SENTENCE_STRUCTURE", "A", "A"),
        ("OPTIMAL", "A++", "A++"),
    ),
}

# Grade mix. Page totals: A++ 3.2 %, A+ 2.6 %, A 12.7 %, B 58.8 %, C 1.7 %, D 1.3 %, unrated 19.6 %.
# A question's grade can never exceed its scene graph's, so each study draws a scene-graph grade and
# each question keeps it (probability _KEEP_STUDY_GRADE) or falls to a lower one in the page's
# proportions. The study weights were solved top-down so the question mix matches the page.
P_UNRATED = 0.196
_QUESTION_GRADE_WEIGHTS = (1.3, 1.7, 58.8, 12.7, 2.6, 3.2)
_STUDY_GRADE_WEIGHTS = (0.0007, 0.0116, 0.6303, 0.1890, 0.0887, 0.0797)
_KEEP_STUDY_GRADE = (1.0, 0.6, 0.97, 0.75, 0.35, 0.5)
_LOWER_GRADE_CUM = tuple(tuple(itertools.accumulate(_QUESTION_GRADE_WEIGHTS[:s])) for s in range(6))

# ----------------------------------------------------------------------------------------------
# Vocabulary: regions (with a coarse frontal-image geometry) and finding / device entities
# ----------------------------------------------------------------------------------------------
_R, _L = (0.12, 0.48), (0.52, 0.88)  # patient's right lung is on the image's left
# name -> (parent, laterality, boxes as (x1, y1, x2, y2) fractions; None = not localized)
REGIONS: dict[str, tuple[str | None, str, tuple | None]] = {
    "lungs": (None, "bilateral", ((0.12, 0.15, 0.48, 0.80), (0.52, 0.15, 0.88, 0.80))),
    "right lung": ("lungs", "right", ((0.12, 0.15, 0.48, 0.80),)),
    "left lung": ("lungs", "left", ((0.52, 0.15, 0.88, 0.80),)),
    "right upper lung zone": ("right lung", "right", ((0.15, 0.15, 0.47, 0.36),)),
    "right mid lung zone": ("right lung", "right", ((0.13, 0.36, 0.47, 0.58),)),
    "right lower lung zone": ("right lung", "right", ((0.12, 0.58, 0.47, 0.80),)),
    "left upper lung zone": ("left lung", "left", ((0.53, 0.15, 0.85, 0.36),)),
    "left mid lung zone": ("left lung", "left", ((0.53, 0.36, 0.87, 0.58),)),
    "left lower lung zone": ("left lung", "left", ((0.53, 0.58, 0.88, 0.80),)),
    "right hilar structures": ("right lung", "right", ((0.36, 0.36, 0.47, 0.52),)),
    "left hilar structures": ("left lung", "left", ((0.53, 0.36, 0.64, 0.52),)),
    "right apical zone": ("right upper lung zone", "right", ((0.18, 0.13, 0.45, 0.24),)),
    "left apical zone": ("left upper lung zone", "left", ((0.55, 0.13, 0.82, 0.24),)),
    "interstitial": ("lungs", "bilateral", None),
    "pleura": (None, "bilateral", ((0.10, 0.14, 0.49, 0.84), (0.51, 0.14, 0.90, 0.84))),
    "right pleura": ("pleura", "right", ((0.10, 0.14, 0.49, 0.84),)),
    "left pleura": ("pleura", "left", ((0.51, 0.14, 0.90, 0.84),)),
    "costophrenic angles": ("pleura", "bilateral", ((0.10, 0.72, 0.22, 0.84), (0.78, 0.72, 0.90, 0.84))),
    "right costophrenic angle": ("costophrenic angles", "right", ((0.10, 0.72, 0.22, 0.84),)),
    "left costophrenic angle": ("costophrenic angles", "left", ((0.78, 0.72, 0.90, 0.84),)),
    "heart": (None, "unspecified", ((0.40, 0.45, 0.75, 0.78),)),
    "cardiac silhouette": ("heart", "unspecified", ((0.38, 0.44, 0.77, 0.79),)),
    "left ventricle": ("heart", "left", ((0.55, 0.52, 0.76, 0.78),)),
    "right atrium": ("heart", "right", ((0.40, 0.50, 0.52, 0.72),)),
    "mediastinum": (None, "unspecified", ((0.40, 0.12, 0.62, 0.55),)),
    "upper mediastinum": ("mediastinum", "unspecified", ((0.40, 0.12, 0.62, 0.35),)),
    "aortic arch": ("mediastinum", "left", ((0.50, 0.25, 0.60, 0.35),)),
    "superior vena cava": ("mediastinum", "right", ((0.40, 0.22, 0.48, 0.45),)),
    "cavoatrial junction": ("mediastinum", "right", ((0.41, 0.42, 0.49, 0.50),)),
    "trachea": ("mediastinum", "unspecified", ((0.46, 0.05, 0.54, 0.33),)),
    "carina": ("trachea", "unspecified", ((0.46, 0.30, 0.55, 0.38),)),
    "spine": (None, "unspecified", ((0.45, 0.05, 0.55, 0.95),)),
    "thoracic spine": ("spine", "unspecified", ((0.45, 0.10, 0.55, 0.85),)),
    "ribs": (None, "bilateral", ((0.06, 0.10, 0.49, 0.85), (0.51, 0.10, 0.94, 0.85))),
    "right ribs": ("ribs", "right", ((0.06, 0.10, 0.49, 0.85),)),
    "left ribs": ("ribs", "left", ((0.51, 0.10, 0.94, 0.85),)),
    "clavicles": (None, "bilateral", ((0.12, 0.08, 0.46, 0.20), (0.54, 0.08, 0.88, 0.20))),
    "right clavicle": ("clavicles", "right", ((0.12, 0.08, 0.46, 0.20),)),
    "left clavicle": ("clavicles", "left", ((0.54, 0.08, 0.88, 0.20),)),
    "diaphragm": (None, "bilateral", ((0.10, 0.70, 0.50, 0.86), (0.50, 0.72, 0.90, 0.88))),
    "right hemidiaphragm": ("diaphragm", "right", ((0.10, 0.70, 0.50, 0.86),)),
    "left hemidiaphragm": ("diaphragm", "left", ((0.50, 0.72, 0.90, 0.88),)),
    "abdomen": (None, "unspecified", ((0.10, 0.82, 0.90, 1.00),)),
    "upper abdomen": ("abdomen", "unspecified", ((0.15, 0.82, 0.85, 0.97),)),
    "stomach": ("abdomen", "left", ((0.55, 0.84, 0.80, 0.99),)),
    "chest wall": (None, "bilateral", ((0.02, 0.08, 0.14, 0.90), (0.86, 0.08, 0.98, 0.90))),
    "right chest wall": ("chest wall", "right", ((0.02, 0.08, 0.14, 0.90),)),
    "left chest wall": ("chest wall", "left", ((0.86, 0.08, 0.98, 0.90),)),
    "neck": (None, "unspecified", ((0.30, 0.00, 0.70, 0.10),)),
    "right internal jugular vein": ("neck", "right", ((0.38, 0.00, 0.46, 0.18),)),
    "soft tissues": (None, "bilateral", None),
}
DEFAULT_QUESTION_REGIONS = ("lungs", "left lung", "right lung", "heart", "mediastinum", "pleura")


class Entity:
    """A finding / device / artifact tag with its hierarchy and the regions it is reported in."""

    __slots__ = ("categories", "kind", "name", "parents", "regions", "severity", "subcategories", "weight")

    def __init__(self, name, kind, categories, subcategories, regions, parents=(), weight=1.0, severity=True):
        self.name, self.kind, self.weight, self.severity = name, kind, weight, severity
        self.categories, self.subcategories = list(categories), list(subcategories)
        self.regions, self.parents = regions, list(parents)


_AF, _DIS, _DEV, _TECH = "ANATOMICAL_FINDING", "DISEASE", "DEVICE", "TECHNICAL_ASSESSMENT"
_LOWER = ("right lower lung zone", "left lower lung zone")
_ZONES = ("right upper lung zone", "right mid lung zone", "left upper lung zone", "left mid lung zone") + _LOWER
ENTITIES: tuple[Entity, ...] = (
    Entity(
        "pleural effusion",
        "finding",
        (_AF, _DIS),
        ("PLEURA",),
        (
            "pleura",
            "right costophrenic angle",
            "left costophrenic angle",
            "costophrenic angles",
            "right pleura",
            "left pleura",
        ),
        weight=9,
    ),
    Entity(
        "pneumothorax",
        "finding",
        (_AF, _DIS),
        ("PLEURA",),
        ("pleura", "right pleura", "left pleura", "right apical zone", "left apical zone"),
        weight=2,
    ),
    Entity("lung opacity", "finding", (_AF,), ("LUNG_FIELD",), ("lungs",) + _ZONES, weight=7),
    Entity(
        "consolidation",
        "finding",
        (_AF, _DIS),
        ("LUNG_FIELD", "PULMONARY_DISEASES", "INFECTION"),
        ("lungs",) + _LOWER + ("right mid lung zone",),
        parents=("lung opacity",),
        weight=5,
    ),
    Entity(
        "atelectasis",
        "finding",
        (_AF, _DIS),
        ("LUNG_FIELD", "PULMONARY_DISEASES"),
        ("lungs",) + _LOWER + ("left lung",),
        parents=("lung opacity",),
        weight=8,
    ),
    Entity(
        "pneumonia",
        "finding",
        (_DIS,),
        ("INFECTION", "PULMONARY_DISEASES"),
        ("lungs",) + _ZONES,
        parents=("consolidation", "lung opacity"),
        weight=4,
    ),
    Entity(
        "pulmonary edema",
        "finding",
        (_DIS,),
        ("LUNG_FIELD", "PULMONARY_DISEASES", "VASCULAR"),
        ("lungs", "interstitial"),
        parents=("lung opacity",),
        weight=5,
    ),
    Entity(
        "vascular congestion",
        "finding",
        (_AF,),
        ("VASCULAR",),
        ("lungs", "right hilar structures", "left hilar structures"),
        weight=4,
    ),
    Entity("nodule", "finding", (_AF,), ("LUNG_FIELD", "TUMOR"), _ZONES, parents=("lung opacity",), weight=2),
    Entity(
        "mass",
        "finding",
        (_AF, _DIS),
        ("TUMOR",),
        _ZONES + ("right hilar structures",),
        parents=("lung opacity",),
        weight=1,
    ),
    Entity("emphysema", "finding", (_DIS,), ("PULMONARY_DISEASES",), ("lungs", "right apical zone"), weight=2),
    Entity("interstitial lung disease", "finding", (_DIS,), ("PULMONARY_DISEASES",), ("interstitial",), weight=1),
    Entity("granuloma", "finding", (_AF,), ("LUNG_FIELD",), _ZONES, weight=1, severity=False),
    Entity("cardiomegaly", "finding", (_AF, _DIS), ("CARDIAC",), ("heart", "cardiac silhouette"), weight=7),
    Entity(
        "enlarged cardiac silhouette",
        "finding",
        (_AF,),
        ("CARDIAC",),
        ("cardiac silhouette",),
        parents=("cardiomegaly",),
        weight=3,
    ),
    Entity("mediastinal widening", "finding", (_AF,), ("MEDIASTINUM",), ("mediastinum", "upper mediastinum"), weight=1),
    Entity(
        "hilar enlargement",
        "finding",
        (_AF,),
        ("MEDIASTINUM", "VASCULAR"),
        ("right hilar structures", "left hilar structures"),
        weight=1,
    ),
    Entity("tortuous aorta", "finding", (_AF,), ("VASCULAR",), ("aortic arch",), weight=3, severity=False),
    Entity("aortic calcification", "finding", (_AF,), ("VASCULAR",), ("aortic arch",), weight=2),
    Entity("hiatal hernia", "finding", (_AF, _DIS), ("MEDIASTINUM", "ABDOMEN"), ("mediastinum",), weight=1),
    Entity(
        "fracture",
        "finding",
        (_AF,),
        ("BONE",),
        ("ribs", "right ribs", "left ribs", "right clavicle", "left clavicle", "thoracic spine"),
        weight=2,
    ),
    Entity("scoliosis", "finding", (_AF,), ("BONE",), ("thoracic spine",), weight=1),
    Entity("degenerative changes", "finding", (_AF,), ("BONE",), ("thoracic spine", "spine"), weight=2),
    Entity("pleural thickening", "finding", (_AF,), ("PLEURA",), ("pleura", "right pleura", "left pleura"), weight=1),
    Entity(
        "elevated hemidiaphragm",
        "finding",
        (_AF,),
        ("DIAPHRAGM",),
        ("right hemidiaphragm", "left hemidiaphragm"),
        weight=2,
        severity=False,
    ),
    Entity("free air", "finding", (_AF,), ("ABDOMEN",), ("upper abdomen",), weight=0.3),
    Entity(
        "subcutaneous emphysema",
        "finding",
        (_AF,),
        ("SOFT_TISSUE",),
        ("chest wall", "right chest wall", "left chest wall"),
        weight=0.5,
    ),
    Entity("patient rotation", "artifact", (_TECH,), ("IMAGING_ARTIFACTS",), (), weight=1, severity=False),
    Entity("motion artifact", "artifact", (_TECH,), ("IMAGING_ARTIFACTS",), (), weight=1, severity=False),
    Entity(
        "overlying external object",
        "artifact",
        (_TECH,),
        ("IMAGING_ARTIFACTS",),
        ("chest wall",),
        weight=1,
        severity=False,
    ),
    Entity(
        "endotracheal tube", "device", (_DEV,), ("TUBES_AND_LINES",), ("trachea", "carina"), weight=3, severity=False
    ),
    Entity(
        "nasogastric tube", "device", (_DEV,), ("TUBES_AND_LINES",), ("stomach", "abdomen"), weight=3, severity=False
    ),
    Entity("tracheostomy tube", "device", (_DEV,), ("TUBES_AND_LINES",), ("trachea",), weight=1, severity=False),
    Entity(
        "chest tube", "device", (_DEV,), ("TUBES_AND_LINES",), ("right pleura", "left pleura"), weight=1, severity=False
    ),
    Entity(
        "central venous catheter",
        "device",
        (_DEV,),
        ("CATHETERS",),
        ("superior vena cava", "cavoatrial junction", "right internal jugular vein"),
        weight=3,
        severity=False,
    ),
    Entity(
        "PICC line",
        "device",
        (_DEV,),
        ("CATHETERS",),
        ("superior vena cava", "cavoatrial junction"),
        parents=("central venous catheter",),
        weight=2,
        severity=False,
    ),
    Entity(
        "pacemaker", "device", (_DEV,), ("CARDIAC_DEVICES",), ("left chest wall", "heart"), weight=2, severity=False
    ),
    Entity(
        "implantable cardioverter-defibrillator",
        "device",
        (_DEV,),
        ("CARDIAC_DEVICES",),
        ("left chest wall", "heart"),
        weight=1,
        severity=False,
    ),
    Entity("prosthetic valve", "device", (_DEV,), ("CARDIAC_DEVICES",), ("heart",), weight=1, severity=False),
    Entity("sternotomy wires", "device", (_DEV,), ("SURGICAL_MATERIAL",), ("mediastinum",), weight=2, severity=False),
    Entity(
        "surgical clips",
        "device",
        (_DEV,),
        ("SURGICAL_MATERIAL",),
        ("upper abdomen", "mediastinum"),
        weight=1,
        severity=False,
    ),
    Entity("ECG leads", "device", (_DEV,), ("FOREIGN_BODIES",), ("chest wall",), weight=2, severity=False),
)
ENTITY = {e.name: e for e in ENTITIES}
FINDINGS = tuple(e for e in ENTITIES if e.kind == "finding")
DEVICES = tuple(e for e in ENTITIES if e.kind == "device")
ARTIFACTS = tuple(e for e in ENTITIES if e.kind == "artifact")
FINDING_SUBCATS = (
    "LUNG_FIELD",
    "PULMONARY_DISEASES",
    "INFECTION",
    "PLEURA",
    "CARDIAC",
    "MEDIASTINUM",
    "VASCULAR",
    "BONE",
    "ABDOMEN",
    "TUMOR",
    "SOFT_TISSUE",
    "DIAPHRAGM",
)
DEVICE_SUBCATS = ("TUBES_AND_LINES", "CATHETERS", "CARDIAC_DEVICES", "SURGICAL_MATERIAL", "FOREIGN_BODIES")
DEFAULT_QUESTION_FINDINGS = (
    "pleural effusion",
    "pneumothorax",
    "consolidation",
    "pulmonary edema",
    "cardiomegaly",
    "atelectasis",
    "lung opacity",
)
# "pre-defined negative default observations" added when nothing contradicts them (page, section 1)
DEFAULT_NEGATIVES = ("pneumothorax", "pleural effusion", "consolidation", "pulmonary edema", "cardiomegaly")
MODIFIERS = {
    "temporal": ("acute", "chronic", "new", "old"),
    "severity": ("small", "mild", "moderate", "large", "severe"),
    "texture": ("patchy", "hazy", "reticular", "nodular"),
    "spread": ("focal", "diffuse", "multifocal"),
}
CHANGES = ("new", "unchanged", "increased", "decreased", "improved", "worsened")
CHILD_TYPES = ("associated_with", "detail", "caused_by")
ANSWER_TYPES = ("main_answer", "details", "related_information")
_HISTORIES = (
    "chest pain and dyspnea",
    "fever and cough",
    "shortness of breath",
    "hypoxia",
    "line placement",
    "fall",
    "tachycardia",
    "altered mental status",
    "hemoptysis",
)
_PATIENT_SEX = ("Female", "Male")

# (template id, strategy, page total over 227,239 studies, question text with {subject})
_TOTAL_STUDIES = 227_239
TEMPLATES: tuple[tuple[str, str, int, str], ...] = (
    ("A_indication", "indication", 218_294, ""),
    ("B01_describe_all", "abnormal", 208_433, "Describe the given study."),
    ("B02_describe_abnormal", "abnormal", 208_433, "Describe all abnormal findings in the given study."),
    ("B03_is_abnormal", "abnormal", 208_433, "Are there any abnormal findings in the given study?"),
    ("B04_is_normal", "abnormal", 208_433, "Is the given study normal?"),
    ("B08_describe_subcat", "abnormal", 2_360_329, "Describe the {subject} in the given study."),
    ("B09_describe_abnormal_subcat", "abnormal", 2_360_329, "Describe any abnormal {subject} in the given study."),
    ("B10_is_abnormal_subcat", "abnormal", 2_360_329, "Are there any abnormal {subject} in the given study?"),
    ("B11_is_normal_subcat", "abnormal", 1_667_464, "Are the {subject} normal in the given study?"),
    ("B12_describe_device", "abnormal", 954_659, "Describe the {subject} in the given study."),
    ("B13_has_devices", "abnormal", 954_659, "Are there any {subject} in the given study?"),
    ("B14_describe_acquisition", "abnormal", 7_017, "Describe the acquisition of the given study."),
    ("B15_describe_imaging_artifacts", "abnormal", 208_433, "Describe any imaging artifacts in the given study."),
    ("B16_has_imaging_artifacts", "abnormal", 208_433, "Are there any imaging artifacts in the given study?"),
    ("C01_describe_region", "region_abnormal", 2_827_147, "Describe the {subject}."),
    ("C02_describe_abnormal_region", "region_abnormal", 2_827_177, "Describe any abnormalities in the {subject}."),
    ("C03_is_abnormal_region", "region_abnormal", 2_832_066, "Is there anything abnormal in the {subject}?"),
    ("C04_is_normal_region", "region_abnormal", 2_831_838, "Is the {subject} normal?"),
    ("C07_describe_region_device", "region_abnormal", 4_650_283, "Describe any devices in the {subject}."),
    ("C08_has_region_device", "region_abnormal", 4_652_197, "Are there any devices in the {subject}?"),
    ("D01_describe_finding", "finding", 2_550_098, "Describe the {subject} in the given study."),
    ("D02_has_finding", "finding", 2_551_216, "Is there {subject}?"),
    ("D03_where_is_finding", "finding", 2_021_152, "Where is the {subject} located?"),
    ("D04_how_severe_is_finding", "finding", 1_325_613, "How severe is the {subject}?"),
    ("D05_describe_device", "finding", 326_628, "Describe the {subject}."),
    ("D06_has_device", "finding", 321_678, "Is there a {subject}?"),
    ("D07_where_is_device", "finding", 322_056, "Where is the {subject} located?"),
)
# Templates asked at most once per study (not scaled by questions_per_study unless unavoidable).
_ONCE_PER_STUDY = {
    "A_indication",
    "B01_describe_all",
    "B02_describe_abnormal",
    "B03_is_abnormal",
    "B04_is_normal",
    "B14_describe_acquisition",
    "B15_describe_imaging_artifacts",
    "B16_has_imaging_artifacts",
}
DEFAULT_QUESTIONS_PER_STUDY = sum(t[2] for t in TEMPLATES) / _TOTAL_STUDIES  # ~185.6

# ----------------------------------------------------------------------------------------------
# Output settings
# ----------------------------------------------------------------------------------------------
FRONTAL_VIEWS = frozenset({"PA", "AP"})
_EXCLUDED = -9  # export tier of rows outside every export (non-frontal)
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
# Fastest deflate: readers do not care about the level, and at 10 % scale (~15 GB of JSON) the
# writer process would otherwise become the bottleneck (level 6: ~1.7x smaller, ~2.5x slower).
ZIP_LEVEL = 1
CSV_GZIP_LEVEL = 1
Q1M_SIZE = 1_000_000  # size cap of the exports' random question subsets
_FLUSH_ROWS = 100_000  # rows per metadata batch (= Parquet row group)
_BATCH_BYTES = 4 << 20  # bytes per message batch sent to the writer process
_PROGRESS_EVERY = 200
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # [U] real whitespace unknown
_dumps = _JSON.encode
_string = json.encoder.encode_basestring  # C-accelerated JSON string literal

# Export destinations: (relative metadata dir, minimum question grade). Main metadata has no filter.
_EXPORT_METADATA = (
    ("exports/A_frontal/metadata", _A),
    ("exports/A_frontal/metadata/Ap", _AP),
    ("exports/A_frontal/metadata/App", _APP),
    ("exports/B_frontal/metadata", _B),
)
_EXPORT_ARCHIVES = (("exports/A_frontal", _A), ("exports/B_frontal", _B))
# q1M subsets: (subset dir, source dir) - a random sample of min(Q1M_SIZE, n) source questions.
_Q1M_SUBSETS = (
    ("exports/A_frontal/metadata/q1M", "exports/A_frontal/metadata"),
    ("exports/A_frontal/metadata/Ap_q1M", "exports/A_frontal/metadata/Ap"),
    ("exports/A_frontal/metadata/App_q1M", "exports/A_frontal/metadata/App"),
    ("exports/B_frontal/metadata/q1M", "exports/B_frontal/metadata"),
)

SUBCAT_PHRASES = {
    "LUNG_FIELD": "lung field findings",
    "PULMONARY_DISEASES": "pulmonary diseases",
    "INFECTION": "signs of infection",
    "PLEURA": "pleural findings",
    "CARDIAC": "cardiac findings",
    "MEDIASTINUM": "mediastinal findings",
    "VASCULAR": "vascular findings",
    "BONE": "bone findings",
    "ABDOMEN": "abdominal findings",
    "TUMOR": "tumors",
    "SOFT_TISSUE": "soft tissue findings",
    "DIAPHRAGM": "diaphragm findings",
    "TUBES_AND_LINES": "tubes and lines",
    "CATHETERS": "catheters",
    "CARDIAC_DEVICES": "cardiac devices",
    "SURGICAL_MATERIAL": "surgical materials",
    "FOREIGN_BODIES": "foreign bodies",
    "IMAGING_ARTIFACTS": "imaging artifacts",
}

# ----------------------------------------------------------------------------------------------
# Metadata levels. Index columns per the page; data columns are dot-namespaced by level
# (docs/datasets.md confirms question.question_type, question.quality.rating and the answer_img.*
# columns; the other names follow the same <level>.<field> pattern - [U] per docs/datasets.md).
# No split column: where the split lives is [U] per docs/datasets.md, so the adapter joins the
# MIMIC-CXR split file on subject/study instead.
# ----------------------------------------------------------------------------------------------
_STR, _INT, _BOOL, _TD = "str", "int64", "bool", "timedelta64[ns]"
LEVEL_INDEX: dict[str, tuple[str, ...]] = {
    "patient": ("patient_id",),
    "study": ("patient_id", "study_id"),
    "image": ("patient_id", "study_id", "image_id"),
    "question": ("patient_id", "study_id", "question_id"),
    "question_image": ("patient_id", "study_id", "question_id", "image_id"),
    "answer": ("patient_id", "study_id", "question_id", "answer_id"),
    "answer_image": ("patient_id", "study_id", "question_id", "answer_id", "image_id"),
}
LEVEL_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    # [U] timespans as pandas timedeltas (duration[ns] in Parquet, "N days HH:MM:SS" in the CSV)
    "patient": (("patient.total_studies", _INT), ("patient.total_study_timespan", _TD)),
    "study": tuple((f"study.quality.{c}", _INT) for c in ("rating", *SCENE_GRAPH_CRITERIA))
    + (
        ("study.num_observations", _INT),
        ("study.procedure", _STR),
        ("study.timestamp_since_first", _TD),
        ("study.timespan_since_prev", _TD),
    ),
    # [U] "size" split into width/height; patient_orientation as MIMIC's Erect/Recumbent code meaning
    "image": (
        ("image.view_position", _STR),
        ("image.patient_orientation", _STR),
        ("image.size.width", _INT),
        ("image.size.height", _INT),
        ("image.quality.localization_quality", _INT),
    ),
    "question": (
        ("question.question_type", _STR),
        ("question.question_strategy", _STR),
        ("question.contains_report_answers", _BOOL),
        ("question.contains_template_answers", _BOOL),
        ("question.num_answers", _INT),  # [U] counts all sub-answers (= answer-level rows)
        ("question.quality.rating", _INT),
        ("question.quality.completeness", _INT),
        ("question.quality.question_clarity", _INT),
    ),
    "question_image": (("question_img.quality.localization_quality", _INT),),
    "answer": (
        ("answer.answer_type", _STR),
        ("answer.answer_level", _INT),
        ("answer.from_report", _BOOL),
        ("answer.quality.rating", _INT),
        ("answer.quality.entailment", _INT),
        ("answer.quality.relevance", _INT),
        ("answer.quality.answer_clarity", _INT),
    ),
    "answer_image": (
        ("answer_img.num_regions", _INT),
        ("answer_img.has_bboxes", _BOOL),
        ("answer_img.is_localization_missing", _BOOL),
        ("answer_img.has_masks", _BOOL),
        ("answer_img.quality.localization_quality", _INT),
    ),
}
LEVELS = tuple(LEVEL_INDEX)
# Levels with one row per question or finer are written by Arrow's CSV writer (fast); the small
# levels go through pandas so timedeltas and quoting look exactly like pandas' to_csv output.
_BIG_LEVELS = frozenset({"question", "question_image", "answer", "answer_image"})
_COUNTED_FIELDS = {"answer": ("answer.answer_type", "answer.answer_level")}


def _pandas_schema(level: str) -> pa.Schema:
    """The Arrow schema pandas' to_parquet would write: index columns kept as a (Multi)Index."""
    # [U] per docs/datasets.md answer_id is int64 (metadata preview shows 1) while the page shows a string
    # placeholder: int here, numbered 0.. in depth-first order, unique within a question
    columns = {name: pd.Series([], dtype=_INT if name == "answer_id" else _STR) for name in LEVEL_INDEX[level]}
    columns.update({name: pd.Series([], dtype=dtype) for name, dtype in LEVEL_COLUMNS[level]})
    frame = pd.DataFrame(columns).set_index(list(LEVEL_INDEX[level]))
    return pa.Schema.from_pandas(frame, preserve_index=True)


class _LevelFiles:
    """The .parquet + .csv.gz pair of one level in one metadata directory."""

    def __init__(self, directory: Path, level: str, schema: pa.Schema):
        directory.mkdir(parents=True, exist_ok=True)
        self.level, self.schema = level, schema
        self.csv_order = list(LEVEL_INDEX[level]) + [name for name, _ in LEVEL_COLUMNS[level]]
        self.parquet = pq.ParquetWriter(directory / f"{level}_metadata.parquet", schema, compression="snappy")
        self._raw = open(directory / f"{level}_metadata.csv.gz", "wb")
        # mtime=0 and no file name in the header keep the bytes reproducible
        self.csv = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, compresslevel=CSV_GZIP_LEVEL, mtime=0)
        self.csv.write((",".join(self.csv_order) + "\n").encode())
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        """Append one batch (schema order) to both files; one Parquet row group per batch."""
        if table.num_rows == 0:
            return
        self.rows += table.num_rows
        self.parquet.write_table(table)
        if self.level in _BIG_LEVELS:
            self.csv.write(_arrow_csv(table.select(self.csv_order)))
        else:
            self.csv.write(table.to_pandas().to_csv(header=False).encode())

    def close(self) -> None:
        self.parquet.close()
        self.csv.close()
        self._raw.close()


def _arrow_csv(table: pa.Table) -> bytes:
    """CSV text like pandas writes it (True/False, no quoting) for tables of plain tokens."""
    columns = [pc.if_else(col, "True", "False") if pa.types.is_boolean(col.type) else col for col in table.columns]
    sink = pa.BufferOutputStream()
    pacsv.write_csv(
        pa.table(columns, names=table.column_names),
        sink,
        pacsv.WriteOptions(include_header=False, quoting_style="none"),
    )
    return sink.getvalue().to_pybytes()


def _row_fields(level: str) -> list[str]:
    """Field order of a buffered row tuple (the export tier follows as the last item).

    For the per-question levels patient_id and study_id are not stored per row but as
    (patient, study, row count) runs, which keeps the hot loop and the pickled batches small.
    """
    run_columns = ("patient_id", "study_id") if level in _BIG_LEVELS else ()
    return [c for c in LEVEL_INDEX[level] if c not in run_columns] + [n for n, _ in LEVEL_COLUMNS[level]]


class _LevelBuffer:
    """Main-process row buffer of one level: tuples in _row_fields order + export tier.

    The tier is the question grade (best grade for patient/study/image rows) or _EXCLUDED for
    rows outside the frontal exports; the writer filters each export by comparing it.
    """

    def __init__(self, level: str):
        self.level, self.runs_based = level, level in _BIG_LEVELS
        self.rows: list[tuple] = []
        self.runs: list[tuple[str, str, int]] = []
        self._run_start = 0

    def end_study(self, patient_id: str, study_id: str) -> None:
        """Close the run of rows that belong to this study."""
        if self.runs_based:
            self.runs.append((patient_id, study_id, len(self.rows) - self._run_start))
            self._run_start = len(self.rows)

    def take(self) -> tuple[list[tuple], list]:
        """Hand over the buffered rows (only between studies, so runs stay whole)."""
        rows, runs = self.rows, self.runs
        self.rows, self.runs, self._run_start = [], [], 0
        return rows, runs


class _LevelWriter:
    """Writer-process side of one level: converts row batches and writes every destination."""

    def __init__(self, out_dir: Path, level: str, destinations):
        self.level, self.schema, self.fields = level, _pandas_schema(level), _row_fields(level)
        self.files = [(min_tier, _LevelFiles(out_dir / rel, level, self.schema)) for rel, min_tier in destinations]
        # value counts kept for the truth dict (cheaper here than per answer in the generator)
        self.value_counts: dict[str, Counter] = {name: Counter() for name in _COUNTED_FIELDS.get(level, ())}

    def write(self, rows: list[tuple], runs: list) -> None:
        if not rows:
            return
        columns = list(zip(*rows))
        cols: dict[str, Collection[Any]] = dict(zip(self.fields, columns))
        for name, counter in self.value_counts.items():
            counter.update(cols[name])
        if runs:
            counts = np.fromiter((r[2] for r in runs), dtype=np.int64, count=len(runs))
            cols["patient_id"] = np.repeat(np.array([r[0] for r in runs], dtype=object), counts)
            cols["study_id"] = np.repeat(np.array([r[1] for r in runs], dtype=object), counts)
        table = pa.Table.from_arrays([pa.array(cols[f.name], type=f.type) for f in self.schema], schema=self.schema)
        tiers = pa.array(columns[-1], type=pa.int8())
        for min_tier, files in self.files:
            files.write(table if min_tier is None else table.filter(pc.greater_equal(tiers, min_tier)))


class _OutputWriter:
    """Everything the writer process owns: the zips and the metadata files of all destinations."""

    def __init__(self, out_dir: Path, destinations: list, archives: dict[str, tuple[str, str]]):
        self.destinations = destinations
        self.levels = {level: _LevelWriter(out_dir, level, destinations) for level in LEVELS}
        self.zips = {}
        for key, (rel, prefix) in archives.items():
            (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            self.zips[key] = (
                zipfile.ZipFile(out_dir / rel, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=ZIP_LEVEL),
                prefix,
            )

    def handle(self, message: tuple) -> None:
        """Apply one message: ("zip", archive, name, bytes) or ("rows", level, rows, runs)."""
        if message[0] == "zip":
            _, key, name, data = message
            archive, prefix = self.zips[key]
            info = zipfile.ZipInfo(prefix + name, date_time=ZIP_DATE_TIME)  # fixed date: reproducible bytes
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data, compresslevel=ZIP_LEVEL)
        else:
            _, level, rows, runs = message
            self.levels[level].write(rows, runs)

    def close(self) -> tuple[dict[str, dict[str, int]], dict[str, Counter]]:
        """Close all files; returns rows written per destination and level, and the value counts."""
        for archive, _ in self.zips.values():
            archive.close()
        counts: dict[str, dict[str, int]] = {rel: {} for rel, _ in self.destinations}
        for level, writer in self.levels.items():
            for (rel, _), (_, files) in zip(self.destinations, writer.files):
                files.close()
                counts[rel][level] = files.rows
        return counts, {name: c for writer in self.levels.values() for name, c in writer.value_counts.items()}


def _writer_main() -> None:
    """Writer process entry: pickled batches on stdin, files out, pickled counts on stdout.

    Any failure is reported as a pickled traceback string instead of the counts.
    """
    out_dir, destinations, archives = json.loads(sys.argv[2])
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    result: object  # the counts, or the traceback text of a failure
    try:
        writer = _OutputWriter(
            Path(out_dir), [tuple(d) for d in destinations], {key: tuple(value) for key, value in archives.items()}
        )
        while (batch := pickle.load(source)) is not None:
            for message in batch:
                writer.handle(message)
        result = writer.close()
    except BaseException:  # report anything (incl. KeyboardInterrupt) to the parent, then exit
        result = traceback.format_exc()
    pickle.dump(result, sink)
    sink.flush()


class _WriterClient:
    """Main-process end of the writer process.

    All compression and Arrow/Parquet/CSV work runs in a separate process: on the 2-core
    target, worker threads lost most of their time re-acquiring the GIL from the CPU-bound
    generator. The child is started as `python -c` rather than via multiprocessing so that
    callers need no `if __name__ == "__main__"` guard (spawn re-runs the main script) and no
    fork happens after Arrow may have started threads. The pipe's back-pressure bounds memory.
    """

    def __init__(self, out_dir: Path, destinations: list, archives: dict):
        bootstrap = (
            "import json, sys; sys.path[:0] = json.loads(sys.argv[1]); "
            "from warehouse.samples.mimic_qba import _writer_main; _writer_main()"
        )
        arguments = json.dumps([str(out_dir), destinations, archives])
        self.process = subprocess.Popen(
            [sys.executable, "-c", bootstrap, json.dumps(sys.path), arguments],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdin is not None and self.process.stdout is not None, "both are pipes"
        self.stdin, self.stdout = self.process.stdin, self.process.stdout
        self.batch: list[tuple] = []
        self.batch_bytes = 0

    def zip_member(self, archive: str, name: str, data: bytes) -> None:
        self._add(("zip", archive, name, data), len(data))

    def rows(self, level: str, rows: list[tuple], runs: list) -> None:
        self._add(("rows", level, rows, runs), 64 * len(rows))

    def _add(self, message: tuple, size: int) -> None:
        self.batch.append(message)
        self.batch_bytes += size
        if self.batch_bytes >= _BATCH_BYTES:
            self._send(self.batch)
            self.batch, self.batch_bytes = [], 0

    def _send(self, payload) -> None:
        try:
            pickle.dump(payload, self.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.stdin.flush()
        except (BrokenPipeError, ConnectionResetError):
            self._result()  # raises with the writer's traceback
            raise

    def _result(self) -> tuple[dict[str, dict[str, int]], dict[str, Counter]]:
        """Wait for the writer; its counts, or a RuntimeError carrying its traceback."""
        try:
            self.stdin.close()
        except BrokenPipeError:
            pass
        try:
            result = pickle.load(self.stdout)
        except EOFError:
            result = "writer process exited without a report"
        self.stdout.close()
        self.process.wait()
        if isinstance(result, str):
            raise RuntimeError(f"QBA writer process failed:\n{result}")
        return result

    def close(self) -> tuple[dict[str, dict[str, int]], dict[str, Counter]]:
        """Send what is left, wait for the writer and return its row and value counts."""
        self._send(self.batch)
        self.batch = []
        self._send(None)
        return self._result()

    def abort(self) -> None:
        """Stop the writer after a failure in the generator (only our own child process)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _filter_level_files(src: Path, dst: Path, level: str, keep: Callable[[pa.RecordBatch], pa.Array]) -> None:
    """Stream one level's Parquet from src and write the kept rows to dst (both file forms)."""
    source = pq.ParquetFile(src / f"{level}_metadata.parquet")
    files = _LevelFiles(dst, level, source.schema_arrow)
    for batch in source.iter_batches(batch_size=_FLUSH_ROWS):
        files.write(pa.Table.from_batches([batch.filter(keep(batch))], schema=source.schema_arrow))
    files.close()


def _question_key(batch: pa.RecordBatch) -> pa.Array:
    """study_id/question_id - question ids repeat across studies, so this is the unique key."""
    return pc.binary_join_element_wise(batch["study_id"], batch["question_id"], pa.scalar("/", pa.large_string()))


def _write_question_sample(root: Path, subset: str, source: str, n_questions: int, rng: random.Random) -> int:
    """Write a q1M-style subset: a random min(Q1M_SIZE, n) questions of `source` with all their rows."""
    chosen = np.array(sorted(rng.sample(range(n_questions), min(Q1M_SIZE, n_questions))), dtype=np.int64)
    src, dst = root / source, root / subset
    keys, studies, patients, offset = [], [], [], 0
    for batch in pq.ParquetFile(src / "question_metadata.parquet").iter_batches(
        batch_size=_FLUSH_ROWS, columns=["patient_id", "study_id", "question_id"]
    ):
        local = chosen[(chosen >= offset) & (chosen < offset + batch.num_rows)] - offset
        picked = batch.take(pa.array(local))
        keys.append(_question_key(picked))
        studies.append(picked["study_id"])
        patients.append(picked["patient_id"])
        offset += batch.num_rows
    key_set = pa.chunked_array(keys, type=pa.large_string()).combine_chunks()
    study_set = pc.unique(pa.chunked_array(studies, type=pa.large_string()))
    patient_set = pc.unique(pa.chunked_array(patients, type=pa.large_string()))
    for level in LEVELS:
        if level == "patient":
            keep = lambda b: pc.is_in(b["patient_id"], value_set=patient_set)
        elif level in ("study", "image"):
            keep = lambda b: pc.is_in(b["study_id"], value_set=study_set)
        else:
            keep = lambda b: pc.is_in(_question_key(b), value_set=key_set)
        _filter_level_files(src, dst, level, keep)
    return len(chosen)


# ----------------------------------------------------------------------------------------------
# Pre-rendered quality dicts, grouped by the grade they imply (drawing one is a list choice)
# ----------------------------------------------------------------------------------------------
def _grade_of(field: str, code: int, answer_type: str = "main_answer") -> int:
    """Grade code implied by one criterion option (related_information changes relevance grades)."""
    if field in SCENE_GRAPH_CRITERIA:
        return GRADE_CODE[SCENE_GRAPH_CRITERIA[field][code][1]]
    option = QA_CRITERIA[field][code]
    return GRADE_CODE[option[2] if answer_type == "related_information" else option[1]]


def _group_by_grade(entries: list[tuple]) -> tuple[list[list], list[list]]:
    """(exact[g], at_least[g]) lists for entries whose second item is their grade code."""
    exact = [[e for e in entries if e[1] == g] for g in range(len(GRADES))]
    at_least = [[e for e in entries if e[1] >= g] for g in range(len(GRADES))]
    return exact, at_least


def _answer_quality_pools() -> dict[str, tuple[list[list], list[list]]]:
    """answer_quality dicts (json, rating, entailment, relevance, clarity) per answer type."""
    pools = {}
    for answer_type in ANSWER_TYPES:
        entries = []
        for codes in itertools.product(
            *(range(len(QA_CRITERIA[f])) for f in ("entailment", "relevance", "answer_clarity"))
        ):
            grade = min(
                _grade_of(f, c, answer_type) for f, c in zip(("entailment", "relevance", "answer_clarity"), codes)
            )
            entries.append(
                ('{"rating":%d,"entailment":%d,"relevance":%d,"answer_clarity":%d}' % (grade, *codes), grade, *codes)
            )
        pools[answer_type] = _group_by_grade(entries)
    return pools


def _question_quality_pool() -> list[list[tuple]]:
    """question_quality dicts whose own criteria are at least grade g, rendered with rating=g."""
    pool = []
    for grade in range(len(GRADES)):
        pool.append(
            [
                ('{"rating":%d,"completeness":%d,"question_clarity":%d}' % (grade, c, q), c, q)
                for c in range(len(QA_CRITERIA["completeness"]))
                for q in range(len(QA_CRITERIA["question_clarity"]))
                if min(_grade_of("completeness", c), _grade_of("question_clarity", q)) >= grade
            ]
        )
    return pool


def _scene_graph_quality_pools() -> tuple[list[list], list[list]]:
    """Scene-graph quality dicts (dict, rating) grouped by their min grade."""
    fields = tuple(SCENE_GRAPH_CRITERIA)
    entries = []
    for codes in itertools.product(*(range(len(SCENE_GRAPH_CRITERIA[f])) for f in fields)):
        grade = min(_grade_of(f, c) for f, c in zip(fields, codes))
        entries.append(({"rating": grade, **dict(zip(fields, codes))}, grade))
    return _group_by_grade(entries)


ANSWER_QUALITY = _answer_quality_pools()
QUESTION_QUALITY = _question_quality_pool()
SG_QUALITY_EXACT, SG_QUALITY_AT_LEAST = _scene_graph_quality_pools()
_UNRATED_ANSWER = ('{"rating":-1,"entailment":-1,"relevance":-1,"answer_clarity":-1}', UNRATED, -1, -1, -1)
_UNRATED_QUESTION = ('{"rating":-1,"completeness":-1,"question_clarity":-1}', -1, -1)


def quality_mapping_rows() -> list[tuple]:
    """Rows of quality_mappings.csv: (field, code, label, grade, grade_if_related_information).

    [U] per docs/datasets.md the real integer table is unknown; here codes run from worst (0) to best and
    -1 means "not rated" (LLM evaluation failed). The last column is set only where the grade
    differs for related_information sub-answers (relevance).
    """
    rows = [("rating", UNRATED, "UNRATED", "", "")]
    rows += [("rating", code, grade, grade, "") for code, grade in enumerate(GRADES)]
    for field, options in SCENE_GRAPH_CRITERIA.items():
        rows += [(field, code, label, grade, "") for code, (label, grade) in enumerate(options)]
    for field, qa_options in QA_CRITERIA.items():
        rows.append((field, UNRATED, "NOT_RATED", "", ""))
        rows += [
            (field, code, label, grade, related if related != grade else "")
            for code, (label, grade, related) in enumerate(qa_options)
        ]
    return rows


# ----------------------------------------------------------------------------------------------
# One study: scene graph, pre-rendered answer sources and the indexes questions are built from
# ----------------------------------------------------------------------------------------------
class Source:
    """Something an answer can be made of (an observation or a template sentence), pre-rendered.

    head/head_frontal hold the JSON members from "text" to "localization" (all images / frontal
    images only), tail holds "from_report" and "extraction_quality". img_columns are the
    answer_image metadata values per study image.
    """

    __slots__ = (
        "children",
        "entity",
        "from_report",
        "head",
        "head_frontal",
        "img_columns",
        "locq",
        "n_boxes",
        "obs_id",
        "obs_ref",
        "positive",
        "regions",
        "tail",
    )

    def __init__(
        self, obs_id, head, head_frontal, tail, from_report, positive, entity, regions, locq, img_columns, n_boxes
    ):
        self.obs_id, self.head, self.head_frontal, self.tail = obs_id, head, head_frontal, tail
        self.obs_ref = f'"{obs_id}"' if obs_id else None  # JSON string, ready for "obs_ids"
        self.from_report, self.positive, self.entity, self.regions = from_report, positive, entity, regions
        self.locq, self.img_columns, self.n_boxes = locq, img_columns, n_boxes
        self.children: list[Source] = []


class _Localized(NamedTuple):
    """One region set localized on all study images: dicts, rendered JSON, answer_image columns."""

    by_image: dict[str, dict]
    json: str
    json_frontal: str
    columns: tuple[list, list, list, list, list]  # num_regions, has_bboxes, missing, has_masks, quality
    n_boxes: int


def _laterality(regions: list[str]) -> str:
    """The page's laterality tag of a region set (left / right / bilateral / unspecified)."""
    sides = {REGIONS[r][1] for r in regions}
    if not sides:
        return "unspecified"
    if len(sides) == 1:
        return sides.pop()
    return "bilateral" if {"left", "right"} <= sides or "bilateral" in sides else "unspecified"


def _ancestors(region: str) -> list[str]:
    """Parent chain of a region; region questions also cover observations in sub-regions."""
    chain = []
    parent = REGIONS[region][0]
    while parent is not None:
        chain.append(parent)
        parent = REGIONS[parent][0]
    return chain


class Study:
    """Builds one study's scene graph and the answer sources its questions draw on."""

    def __init__(self, spec: StudySpec, rng: random.Random):
        self.spec, self.rng = spec, rng
        self.patient_id, self.study_id = f"p{spec.subject_id}", f"s{spec.study_id}"
        self.image_ids = [im.dicom_id for im in spec.images]
        self.frontal = [im.view_position in FRONTAL_VIEWS for im in spec.images]
        self.frontal_idx = [i for i, f in enumerate(self.frontal) if f]
        self.has_frontal = bool(self.frontal_idx)
        self.grade = rng.choices(range(len(GRADES)), weights=_STUDY_GRADE_WEIGHTS)[0]
        self.quality = rng.choice(SG_QUALITY_EXACT[self.grade])[0]
        self.quality_json = _dumps(self.quality)
        self._localize_regions()
        self.nodes: dict[str, dict] = {}
        self.sources: dict[str, Source] = {}
        self._localized: dict[tuple[str, ...], _Localized] = {}
        self._templates: dict[str, Source] = {}
        self._template_tags: dict[tuple, str] = {}
        self._build_observations()
        self._build_indication()
        self._build_indexes()

    # -- localization ------------------------------------------------------------------------
    def _localize_regions(self) -> None:
        """Per region and image: (boxes, has_mask, fallback). Frontal images are mostly boxed."""
        rng = self.rng
        self.region_loc: dict[str, list[tuple]] = {}
        for name, (parent, _, geometry) in REGIONS.items():
            per_image: list[tuple] = []
            for image, frontal in zip(self.spec.images, self.frontal):
                if geometry is None:  # non-localized region: fall back to the parent's boxes if any
                    parent_loc = (
                        self.region_loc.get(parent, [None] * len(self.frontal))[len(per_image)] if parent else None
                    )
                    per_image.append(
                        (parent_loc[0], False, True) if parent_loc and parent_loc[0] else ([], False, False)
                    )
                    continue
                boxed = rng.random() < (0.95 if frontal else 0.08)
                if not boxed:
                    per_image.append(([], False, False))
                    continue
                w, h = image.columns, image.rows
                boxes = [
                    [
                        float(round((x1 + rng.uniform(-0.02, 0.02)) * w)),
                        float(round((y1 + rng.uniform(-0.02, 0.02)) * h)),
                        float(round((x2 + rng.uniform(-0.02, 0.02)) * w)),
                        float(round((y2 + rng.uniform(-0.02, 0.02)) * h)),
                    ]
                    for x1, y1, x2, y2 in geometry
                ]
                per_image.append((boxes, rng.random() < (0.85 if frontal else 0.3), False))
            self.region_loc[name] = per_image

    def _localization(self, regions: tuple[str, ...], i: int) -> dict:
        """The localization entry of a region set on image i (page format)."""
        refs, boxes, masks, missing, fallback = [], [], [], [], False
        for region in regions:
            region_boxes, has_mask, is_fallback = self.region_loc[region][i]
            if region_boxes:
                refs.append(REGIONS[region][0] if is_fallback else region)
                boxes.extend(region_boxes)
                fallback = fallback or is_fallback
                if has_mask:
                    masks.append(region)
            else:
                missing.append(region)
        if not boxes:
            quality = NO_LOC
        elif fallback:
            quality = FALLBACK_LOC
        elif missing:
            quality = INCOMPLETE_LOC
        else:
            quality = BBOX_MASK_LOC if len(masks) == len(refs) else BBOX_LOC
        return {
            "image_id": self.image_ids[i],
            "localization_reference_ids": refs,
            "bboxes": boxes,
            "instance_mask_ids": masks,
            "missing_localization": missing,
            "is_fallback": fallback,
            "localization_quality": quality,
        }

    def localized(self, regions: tuple[str, ...]) -> _Localized:
        """Localization of a region set on every image, rendered once per study and reused."""
        packed = self._localized.get(regions)
        if packed is None:
            locs = [self._localization(regions, i) for i in range(len(self.image_ids))]
            items = [f'"{loc["image_id"]}":{_dumps(loc)}' for loc in locs]
            columns = (
                [len(loc["localization_reference_ids"]) for loc in locs],
                [bool(loc["bboxes"]) for loc in locs],
                [bool(loc["missing_localization"]) for loc in locs],
                [bool(loc["instance_mask_ids"]) for loc in locs],
                [loc["localization_quality"] for loc in locs],
            )
            packed = _Localized(
                {loc["image_id"]: loc for loc in locs},
                "{" + ",".join(items) + "}",
                "{" + ",".join(items[i] for i in self.frontal_idx) + "}",
                columns,
                sum(len(loc["bboxes"]) for loc in locs),
            )
            self._localized[regions] = packed
        return packed

    def _source(
        self,
        obs_id: str | None,
        text: str,
        name_tag: str,
        tags_json: str,
        regions: tuple[str, ...],
        from_report: bool,
        extraction_json: str,
        positive: bool,
        entity: str | None,
    ) -> Source:
        """Pre-render the answer JSON pieces and answer_image values of one answer source."""
        loc = self.localized(regions)
        prefix = f'"text":{_string(text)},"name_tag":{_string(name_tag)},{tags_json},"localization":'
        tail = f'"from_report":{"true" if from_report else "false"},"extraction_quality":{extraction_json}'
        return Source(
            obs_id,
            prefix + loc.json,
            prefix + loc.json_frontal,
            tail,
            from_report,
            positive,
            entity,
            regions,
            loc.columns[4],
            loc.columns,
            loc.n_boxes,
        )

    # -- observations --------------------------------------------------------------------------
    def _build_observations(self) -> None:
        """Positive findings, devices, artifacts and default negatives, some with child nodes."""
        rng = self.rng
        picks: list[tuple[Entity, bool, bool]] = []  # (entity, positive, from_report)
        n_pos = rng.choices(range(7), weights=(16, 22, 20, 16, 12, 8, 6))[0]
        positives = _weighted_sample(rng, FINDINGS, n_pos)
        picks += [(e, True, True) for e in positives]
        if rng.random() < 0.35:
            picks += [(e, True, True) for e in _weighted_sample(rng, DEVICES, rng.choice((1, 1, 2, 3)))]
        if rng.random() < 0.08:
            picks.append((rng.choice(ARTIFACTS), True, True))
        for name in DEFAULT_NEGATIVES:
            if ENTITY[name] not in positives and rng.random() < 0.85:
                picks.append((ENTITY[name], False, rng.random() < 0.7))
        if rng.random() < 0.3:  # a report-derived negative beyond the defaults ("no fracture")
            extra = rng.choice(FINDINGS)
            if all(extra is not p[0] for p in picks):
                picks.append((extra, False, True))
        rng.shuffle(picks)
        self.sentences: dict[str, dict] = {}
        self.top_ids: list[str] = []
        self.obs_relations: list[dict] = []
        self.obs_sent: list[dict] = []
        self.located_at: list[dict] = []
        for k, (entity, positive, from_report) in enumerate(picks, start=1):
            obs_id = f"O{k:02d}"
            sent_id = None
            if from_report:
                sent_id = f"S{len(self.sentences) + 1:02d}"
            node = self._add_observation(obs_id, entity, positive, from_report, 0, None, sent_id)
            self.top_ids.append(obs_id)
            if sent_id:
                section = "IMPRESSION" if positive and rng.random() < 0.3 else "FINDINGS"
                self.sentences[sent_id] = {
                    "sent_id": sent_id,
                    "section": section,
                    "section_type": section,
                    "sentence": node["change_sentence"] or node["summary_sentence"],
                }
            if positive and entity.kind != "artifact" and rng.random() < _P_CHILDREN:
                self._add_children(obs_id, entity, sent_id, 1)

    def _add_children(self, parent_id: str, entity: Entity, sent_id: str | None, level: int) -> None:
        """Sub-observations (detail / associated finding) giving 1-2 levels of sub-answers."""
        rng = self.rng
        for j in range(1, rng.choice((1, 1, 2)) + 1):
            child_id = f"{parent_id}.{j:02d}"
            child_type = rng.choice(CHILD_TYPES)
            child_entity = entity if child_type == "detail" else rng.choice(FINDINGS)
            self._add_observation(child_id, child_entity, True, True, level, child_type, sent_id)
            self.obs_relations.append(
                {"parent_observation_id": parent_id, "child_observation_id": child_id, "child_type": child_type}
            )
            self.sources[parent_id].children.append(self.sources[child_id])
            if level == 1 and rng.random() < 0.2:
                self._add_children(child_id, child_entity, sent_id, 2)

    def _add_observation(self, obs_id, entity: Entity, positive, from_report, level, child_type, sent_id) -> dict:
        """Create the scene-graph node and its answer source."""
        rng = self.rng
        regions = [entity.regions[0] if not positive else rng.choice(entity.regions)] if entity.regions else []
        probability = (
            rng.choices(("positive", "likely", "may"), (70, 15, 15))[0]
            if positive
            else rng.choices(("negative", "unlikely"), (90, 10))[0]
        )
        certainty = {"positive": "certain", "negative": "certain", "may": "uncertain"}.get(probability, "likely")
        modifiers: dict[str, list[str]] = {key: [] for key in MODIFIERS}
        if positive and entity.severity and rng.random() < 0.6:
            modifiers["severity"].append(rng.choice(MODIFIERS["severity"]))
        if positive and entity.kind == "finding" and rng.random() < 0.3:
            key = rng.choice(("temporal", "texture", "spread"))
            modifiers[key].append(rng.choice(MODIFIERS[key]))
        name, summary = _observation_text(entity, positive, probability, regions, modifiers)
        changes = [rng.choice(CHANGES)] if positive and from_report and rng.random() < 0.3 else []
        change_sentence = f"The {entity.name} is {changes[0]}." if changes else None
        quality = rng.choice(SG_QUALITY_AT_LEAST[self.grade])[0]
        node = {
            "obs_id": obs_id,
            "name": name,
            "summary_sentence": summary,
            "child_type": child_type,
            "child_level": level,
            "regions": [{"region": r, "distances": []} for r in regions],
            "non_resolved_regions": [],
            "laterality": _laterality(regions),
            "default_regions": regions if not positive else [],
            "obs_entities": [entity.name],
            "obs_entities_parents": entity.parents,
            "non_resolved_obs_entities": [],
            "obs_categories": entity.categories,
            "obs_subcategories": entity.subcategories,
            "probability": probability,
            "certainty": certainty,
            "positiveness": "pos" if positive else "neg",
            "modifiers": modifiers,
            "changes": changes,
            "change_sentence": change_sentence,
            "from_report": from_report,
            "obs_quality": quality,
        }
        tags = {
            "laterality": node["laterality"],
            "regions": regions,
            "obs_entities": [entity.name],
            "obs_entities_parents": node["obs_entities_parents"],
            "obs_categories": entity.categories,
            "obs_subcategories": entity.subcategories,
            "certainty": certainty,
            "positiveness": node["positiveness"],
            "modifiers": [[k, v] for k, values in modifiers.items() for v in values],
        }
        source = self._source(
            obs_id,
            summary,
            name[0].upper() + name[1:],
            _dumps(tags)[1:-1],
            tuple(regions),
            from_report,
            _dumps(quality),
            positive,
            entity.name,
        )
        node["localization"] = self.localized(tuple(regions)).by_image
        self.nodes[obs_id] = node
        self.sources[obs_id] = source
        self.located_at += [
            {
                "region": r,
                "observation_id": obs_id,
                "distances": [],
                "where_specified": "default" if not positive else "direct",
            }
            for r in regions
        ]
        if sent_id:
            self.obs_sent.append({"observation_id": obs_id, "sentence_id": sent_id})
        return node

    def _build_indication(self) -> None:
        """Indication section plus the OIND observation answering it (present in ~96 % of studies)."""
        rng = self.rng
        self.indication: dict[str, Any] | None = None
        if rng.random() >= _TEMPLATE_MEAN["A_indication"]:
            return
        sex, history = rng.choice(_PATIENT_SEX), rng.choice(_HISTORIES)
        targets = rng.sample(DEFAULT_QUESTION_FINDINGS[:5], rng.choice((1, 2)))
        related = [o for o in self.top_ids if self.sources[o].entity in targets]
        positive = any(self.sources[o].positive for o in related)
        target_text = " and ".join(targets)
        evaluation = f"Evaluate for {target_text}."
        answer = f"findings concerning for {targets[0]}" if positive else f"no evidence of {target_text}"
        regions = sorted({r for o in related for r in self.sources[o].regions}) or ["lungs"]
        sent_id = f"S{len(self.sentences) + 1:02d}"
        section = rng.choice(("INDICATION", "HISTORY"))
        self.sentences[sent_id] = {
            "sent_id": sent_id,
            "section": section,
            "section_type": "INDICATION",
            "sentence": f"___{sex[0]} with {history}. Eval for {target_text}.",
        }
        entities = [ENTITY[t] for t in targets]
        tags = {
            "laterality": _laterality(regions),
            "regions": regions,
            "obs_entities": targets,
            "obs_entities_parents": sorted({p for e in entities for p in e.parents}),
            "obs_categories": sorted({c for e in entities for c in e.categories}),
            "obs_subcategories": sorted({c for e in entities for c in e.subcategories}),
            "certainty": "certain",
            "positiveness": "pos" if positive else "neg",
            "modifiers": [],
        }
        summary = answer[0].upper() + answer[1:] + "."
        quality = rng.choice(SG_QUALITY_AT_LEAST[self.grade])[0]
        oind = {
            "obs_id": "OIND",
            "name": answer,
            "summary_sentence": summary,
            "child_type": None,
            "child_level": 0,
            "regions": [{"region": r, "distances": []} for r in regions],
            "non_resolved_regions": [],
            "laterality": tags["laterality"],
            "default_regions": [],
            "obs_entities": targets,
            "obs_entities_parents": tags["obs_entities_parents"],
            "non_resolved_obs_entities": [],
            "obs_categories": tags["obs_categories"],
            "obs_subcategories": tags["obs_subcategories"],
            "probability": "positive" if positive else "negative",
            "certainty": "certain",
            "positiveness": tags["positiveness"],
            "modifiers": {key: [] for key in MODIFIERS},
            "changes": [],
            "change_sentence": None,
            "from_report": True,
            "obs_quality": quality,
            "localization": self.localized(tuple(regions)).by_image,
        }
        self.indication_source = self._source(
            "OIND",
            summary,
            answer[0].upper() + answer[1:],
            _dumps(tags)[1:-1],
            tuple(regions),
            True,
            _dumps(quality),
            positive,
            targets[0],
        )
        self.indication_related = related
        self.indication = {
            "indication_summary": f"{sex} with {history}; should be evaluated for {target_text}.",
            "patient_info": f"{sex}, with {history}.",
            "indication": history[0].upper() + history[1:] + ".",
            "evaluation": evaluation,
            "associated_sentence_ids": sorted(
                {s["sentence_id"] for s in self.obs_sent if s["observation_id"] in related}
            ),
            "associated_obs_ids": related,
            "answer_for_indication": oind,
        }

    def _build_indexes(self) -> None:
        """Lookups from question subjects (entity, region, subcategory) to top-level observations."""
        self.top = [self.sources[o] for o in self.top_ids]
        self.positives = [s for s in self.top if s.positive]
        self.by_entity: dict[str, list[Source]] = {}
        self.by_region: dict[str, list[Source]] = {}
        self.by_subcat: dict[str, list[Source]] = {}
        for obs_id, source in zip(self.top_ids, self.top):
            self.by_entity.setdefault(source.entity, []).append(source)
            for sub in self.nodes[obs_id]["obs_subcategories"]:
                self.by_subcat.setdefault(sub, []).append(source)
            for region in {a for r in source.regions for a in (r, *_ancestors(r))}:
                self.by_region.setdefault(region, []).append(source)
        self.mentioned_regions = list(
            dict.fromkeys(a for s in self.top for r in s.regions for a in (r, *_ancestors(r)))
        )

    # -- template answers ----------------------------------------------------------------------
    def template(self, text: str, regions: list[str], entities: list[str], positive: bool) -> Source:
        """A template-based (not report-derived) answer, cached per text within the study."""
        source = self._templates.get(text)
        if source is None:
            key = (tuple(regions), tuple(entities), positive)
            tags_json = self._template_tags.get(key)
            if tags_json is None:
                ents = [ENTITY[e] for e in entities]
                tags_json = _dumps(
                    {
                        "laterality": _laterality(regions),
                        "regions": regions,
                        "obs_entities": entities,
                        "obs_entities_parents": sorted({p for e in ents for p in e.parents}),
                        "obs_categories": sorted({c for e in ents for c in e.categories}),
                        "obs_subcategories": sorted({c for e in ents for c in e.subcategories}),
                        "certainty": "certain",
                        "positiveness": "pos" if positive else "neg",
                        "modifiers": [],
                    }
                )[1:-1]
                self._template_tags[key] = tags_json
            source = self._source(
                None,
                text,
                text[:-1],
                tags_json,
                key[0],
                False,
                self.quality_json,
                positive,
                entities[0] if entities else None,
            )
            self._templates[text] = source
        return source

    # -- documents -----------------------------------------------------------------------------
    def scene_graph(self, keep: list[int] | None = None) -> dict:
        """The scene_graph.json document; `keep` restricts localizations to some images (exports)."""
        ids = self.image_ids if keep is None else [self.image_ids[i] for i in keep]

        def restricted(node: dict) -> dict:
            return node if keep is None else {**node, "localization": {i: node["localization"][i] for i in ids}}

        regions = {}
        for name in self.mentioned_regions:
            loc = self.localized((name,)).by_image
            regions[name] = {
                "region": name,
                "laterality": REGIONS[name][1],
                "localization": loc,
                "region_localization_quality": max(v["localization_quality"] for v in loc.values()),
            }
        indication = self.indication
        if indication is not None:
            indication = {**indication, "answer_for_indication": restricted(indication["answer_for_indication"])}
        relations = [
            {"region": REGIONS[r][0], "related_region": r, "relation_type": "sub_region"}
            for r in self.mentioned_regions
            if REGIONS[r][0] is not None
        ]
        relations += [
            {"region": r, "related_region": other, "relation_type": other.split()[0]}
            for r in self.mentioned_regions
            for other in [_counterpart(r)]
            if other and other in regions
        ]
        img_quality = self.image_localization_quality()
        return {
            "patient_id": self.patient_id,
            "study_id": self.study_id,
            "sentences": self.sentences,
            "top_level_obs_ids": self.top_ids,
            "observations": {k: restricted(v) for k, v in self.nodes.items()},
            "indication": indication,
            "regions": {k: restricted(v) for k, v in regions.items()},
            "located_at_relations": self.located_at,
            "obs_relations": self.obs_relations,
            "obs_sent_relations": self.obs_sent,
            "region_region_relations": relations,
            "study_quality": self.quality,
            "study_img_localization_quality": {i: img_quality[i] for i in ids},
        }

    def image_localization_quality(self) -> dict[str, int]:
        """Per image: the worst localization quality over the study's observations."""
        result = {}
        for i, image_id in enumerate(self.image_ids):
            result[image_id] = min((s.locq[i] for s in self.top if s.regions), default=NO_LOC)
        return result


def _counterpart(region: str) -> str | None:
    """The same region on the other side ("left lung" -> "right lung"), if it exists."""
    for a, b in (("left ", "right "), ("right ", "left ")):
        if region.startswith(a) and (other := b + region[len(a) :]) in REGIONS:
            return other
    return None


def _weighted_sample(rng: random.Random, entities: tuple[Entity, ...], k: int) -> list[Entity]:
    """k distinct entities, drawn proportionally to their prevalence weight."""
    chosen: list[Entity] = []
    pool = list(entities)
    while pool and len(chosen) < k:
        pick = rng.choices(pool, weights=[e.weight for e in pool])[0]
        chosen.append(pick)
        pool.remove(pick)
    return chosen


def _observation_text(
    entity: Entity, positive: bool, probability: str, regions: list[str], modifiers: dict
) -> tuple[str, str]:
    """(name, summary_sentence) in the style of rewritten report sentences."""
    where = f" in the {regions[0]}" if regions and regions[0] != entity.regions[0] else ""
    if not positive:
        if probability == "unlikely":
            return f"{entity.name} unlikely", f"{entity.name[0].upper()}{entity.name[1:]}{where} is unlikely."
        return f"no {entity.name}", f"There is no {entity.name}{where}."
    if entity.kind == "device":
        return f"{entity.name}{where}", f"A {entity.name} is present, terminating{where or ' in expected position'}."
    adjectives = " ".join(modifiers["severity"] + modifiers["texture"] + modifiers["spread"] + modifiers["temporal"])
    name = f"{adjectives} {entity.name}".strip() + where
    lead = {"positive": "There is", "likely": "There is likely", "may": "There may be"}[probability]
    return name, f"{lead} {name}."


_P_CHILDREN = 0.6  # share of positive observations with sub-observations (sub-answers)
_TEMPLATE_MEAN = {tid: total / _TOTAL_STUDIES for tid, _, total, _ in TEMPLATES}

# ----------------------------------------------------------------------------------------------
# Questions: which subjects a study is asked about, and which sources answer each question
# ----------------------------------------------------------------------------------------------
MAIN, DETAILS, RELATED = ANSWER_TYPES
_P_RELATED = 0.85  # tuned with _P_CHILDREN so answers per question average ~2.16 (90.9M / 42.2M)
_SUBJECT_KIND = {
    "B08": "subcat",
    "B09": "subcat",
    "B10": "subcat",
    "B11": "subcat",
    "B12": "device_subcat",
    "B13": "device_subcat",
    "C01": "region",
    "C02": "region",
    "C03": "region",
    "C04": "region",
    "C07": "region",
    "C08": "region",
    "D01": "finding",
    "D02": "finding",
    "D03": "finding",
    "D04": "finding",
    "D05": "device",
    "D06": "device",
    "D07": "device",
}
_VARIABLE_NAME = {
    "subcat": "subcategory",
    "device_subcat": "subcategory",
    "region": "region",
    "finding": "finding",
    "device": "device",
}


def _template_scales(questions_per_study: float | None) -> tuple[float, float]:
    """Scale factors (once-per-study templates, repeated templates) that hit the requested mean."""
    if questions_per_study is None:
        return 1.0, 1.0
    once = sum(_TEMPLATE_MEAN[t] for t in _ONCE_PER_STUDY)
    if questions_per_study <= once:
        return questions_per_study / once, 0.0
    return 1.0, (questions_per_study - once) / (DEFAULT_QUESTIONS_PER_STUDY - once)


def _subject_orders(study: Study, rng: random.Random) -> dict[str, list[str]]:
    """Question subjects per kind: defaults first, then what the study mentions, then random picks."""

    def ordered(first, universe):
        first = list(dict.fromkeys(first))
        rest = [x for x in universe if x not in first]
        rng.shuffle(rest)
        return first + rest

    mentioned_entities = [s.entity for s in study.top]
    mentioned_subcats = [c for s in study.top for c in ENTITY[s.entity].subcategories]
    return {
        "subcat": ordered([c for c in mentioned_subcats if c in FINDING_SUBCATS], FINDING_SUBCATS),
        "device_subcat": ordered([c for c in mentioned_subcats if c in DEVICE_SUBCATS], DEVICE_SUBCATS),
        "region": ordered([*DEFAULT_QUESTION_REGIONS, *study.mentioned_regions], tuple(REGIONS)),
        "finding": ordered(
            [*DEFAULT_QUESTION_FINDINGS, *(e for e in mentioned_entities if ENTITY[e].kind == "finding")],
            tuple(e.name for e in FINDINGS),
        ),
        "device": ordered(
            [e for e in mentioned_entities if ENTITY[e].kind == "device"], tuple(e.name for e in DEVICES)
        ),
    }


def _yes_no(study: Study, hits: list[Source], yes: str, no: str, regions: list[str], entities: list[str]) -> list:
    """Template yes/no main answer, with the supporting observations as details."""
    if hits:
        return [(study.template(yes, regions, entities, True), MAIN)] + [(s, DETAILS) for s in hits]
    return [(study.template(no, regions, entities, False), MAIN)]


def _describe(study: Study, hits: list[Source], no: str, regions: list[str], entities: list[str]) -> list:
    """All matching observations as main answers, or a template sentence when there are none."""
    return [(s, MAIN) for s in hits] or [(study.template(no, regions, entities, False), MAIN)]


def _related(study: Study, rng: random.Random, region: str | None, exclude: list, p: float, same_region: bool) -> list:
    """Sometimes 1-2 related_information answers: observations in the parent / other-side region
    (and, for device and finding questions, other observations in the same region)."""
    if region is None or rng.random() >= p:
        return []
    neighbours = [n for n in ((region,) if same_region else ()) + (REGIONS[region][0], _counterpart(region)) if n]
    taken = {id(source) for source, _ in exclude}
    candidates = list({id(s): s for n in neighbours for s in study.by_region.get(n, ()) if id(s) not in taken}.values())
    if not candidates:
        return []
    return [(s, RELATED) for s in rng.sample(candidates, min(len(candidates), rng.choice((1, 2))))]


def plan_answers(study: Study, rng: random.Random, tid: str, subject: str | None) -> list[tuple[Source, str]]:
    """Top-level (source, answer_type) pairs answering one question; children follow the sources."""
    code = tid[:3]
    if code == "A_i":
        return [(study.indication_source, MAIN)] + [(study.sources[o], DETAILS) for o in study.indication_related]
    pos = study.positives
    if code == "B01":
        return [(s, MAIN) for s in study.top]
    if code == "B02":
        return _describe(study, pos, "There are no abnormal findings.", [], [])
    if code in ("B03", "B04"):
        entities = sorted({s.entity for s in pos})
        regions = sorted({r for s in pos for r in s.regions})
        if code == "B03":
            return _yes_no(
                study,
                pos,
                "Yes, there are abnormal findings.",
                "No, there are no abnormal findings.",
                regions,
                entities,
            )
        return _yes_no(study, pos, "No, the study is not normal.", "Yes, the study is normal.", regions, entities)
    if code in ("B08", "B09", "B10", "B11", "B12", "B13", "B15", "B16"):
        subcat = subject or "IMAGING_ARTIFACTS"
        phrase = SUBCAT_PHRASES[subcat]
        hits = study.by_subcat.get(subcat, [])
        abnormal = [s for s in hits if s.positive]
        entities = sorted({s.entity for s in abnormal})
        regions = sorted({r for s in abnormal for r in s.regions})
        if code in ("B08", "B12", "B15"):
            return _describe(study, hits if code == "B08" else abnormal, f"There are no {phrase}.", [], [])
        if code == "B09":
            return _describe(study, abnormal, f"There are no abnormal {phrase}.", [], [])
        if code == "B11":
            return _yes_no(
                study,
                abnormal,
                f"No, there are abnormal {phrase}.",
                f"Yes, the {phrase} are normal.",
                regions,
                entities,
            )
        return _yes_no(study, abnormal, f"Yes, there are {phrase}.", f"No, there are no {phrase}.", regions, entities)
    if code == "B14":
        views = " and ".join(dict.fromkeys(im.view_position or "unknown" for im in study.spec.images))
        return [
            (
                study.template(f"The study consists of {len(study.image_ids)} image(s) ({views} view).", [], [], False),
                MAIN,
            )
        ]
    if code[0] == "C":
        assert subject is not None, f"{tid} is asked about a region"
        region = subject
        hits = study.by_region.get(region, [])
        if code in ("C07", "C08"):
            devices = [s for s in hits if ENTITY[s.entity].kind == "device"]
            if code == "C07":
                tops = _describe(study, devices, f"There are no devices in the {region}.", [region], [])
            else:
                tops = _yes_no(
                    study,
                    devices,
                    f"Yes, there are devices in the {region}.",
                    f"No, there are no devices in the {region}.",
                    [region],
                    [],
                )
            return tops + _related(study, rng, region, tops, _P_RELATED, True)
        abnormal = [s for s in hits if s.positive]
        entities = sorted({s.entity for s in abnormal})
        if code == "C01":
            tops = _describe(study, hits, f"The {region} is unremarkable.", [region], [])
        elif code == "C02":
            tops = _describe(study, abnormal, f"There are no abnormalities in the {region}.", [region], [])
        elif code == "C03":
            tops = _yes_no(
                study,
                abnormal,
                f"Yes, there are abnormalities in the {region}.",
                f"No, there is nothing abnormal in the {region}.",
                [region],
                entities,
            )
        else:
            tops = _yes_no(
                study, abnormal, f"No, the {region} is not normal.", f"Yes, the {region} is normal.", [region], entities
            )
        return tops + _related(study, rng, region, tops, _P_RELATED, False)
    # D: findings and devices
    assert subject is not None, f"{tid} is asked about a finding or device"
    entity = ENTITY[subject]
    hits = study.by_entity.get(subject, [])
    present = [s for s in hits if s.positive]
    regions = sorted({r for s in (present or hits) for r in s.regions}) or list(entity.regions[:1])
    absent = f"There is no {subject}."
    if code in ("D01", "D05"):
        tops = _describe(study, hits, absent, regions, [subject])
    elif code in ("D02", "D06"):
        tops = _yes_no(study, present, f"Yes, there is {subject}.", f"No, there is no {subject}.", regions, [subject])
    elif code in ("D03", "D07"):
        where = " and the ".join(regions) or "chest"
        tops = _yes_no(study, present, f"The {subject} is located in the {where}.", absent, regions, [subject])
    else:
        tops = _yes_no(study, present, f"The {subject} is {_severity_of(study, present)}.", absent, regions, [subject])
    return tops + _related(study, rng, regions[0] if regions else None, tops, _P_RELATED, True)


def _severity_of(study: Study, present: list[Source]) -> str:
    """The first severity modifier of the present observations (answer of D04)."""
    for source in present:
        severity = study.nodes[source.obs_id]["modifiers"]["severity"]
        if severity:
            return severity[0]
    return "of unspecified severity"


# ----------------------------------------------------------------------------------------------
# The generator
# ----------------------------------------------------------------------------------------------
def _study_path(patient_id: str, study_id: str) -> str:
    """p1x/p1xxxxxxx/sxxxxxxxx (page: p1x = first 2 digits of the subject_id)."""
    return f"{patient_id[:3]}/{patient_id}/{study_id}"


def _timestamp(spec: StudySpec) -> datetime:
    """StudyDate + StudyTime (HHMMSS.fff with leading zeros lost, as MIMIC stores it)."""
    date, time = spec.study_date, spec.study_time
    seconds = time % 100
    return datetime(
        date // 10000,
        date // 100 % 100,
        date % 100,
        int(time // 10000),
        int(time // 100 % 100),
        int(seconds),
        round((seconds - int(seconds)) * 1e6) % 1_000_000,
    )


def _nanoseconds(delta: timedelta) -> int:
    """A datetime.timedelta as integer ns, the unit of the duration[ns] metadata columns."""
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _procedure(spec: StudySpec) -> str:
    """A MIMIC-like PerformedProcedureStepDescription derived from the study's views."""
    views = {im.view_position for im in spec.images}
    if "PA" in views and ({"LATERAL", "LL"} & views):
        return "CHEST (PA AND LAT)"
    if "AP" in views:
        return "CHEST (PORTABLE AP)"
    return "CHEST (SINGLE VIEW)"


class _StudyQuestions:
    """Builds one study's questions: grades, both JSON variants and the metadata rows.

    This is the hot loop (~4M questions at 10 % scale), so buffer methods are bound once per
    study, JSON comes from pre-rendered source fragments, and counters are kept per study.
    """

    def __init__(self, study: Study, rng: random.Random, buffers: dict[str, _LevelBuffer], exports: bool):
        self.study, self.rng = study, rng
        self.export_on = exports and study.has_frontal
        self.question_tier = (lambda g: g) if study.has_frontal else (lambda g: _EXCLUDED)
        self.img_tiers = [[g if f else _EXCLUDED for f in study.frontal] for g in range(UNRATED, len(GRADES))]
        self.add_question_row = buffers["question"].rows.append
        self.add_question_image_rows = buffers["question_image"].rows.extend
        self.add_answer_row = buffers["answer"].rows.append
        self.add_answer_image_rows = buffers["answer_image"].rows.extend
        self.full: list[str] = []  # rendered questions, all images
        self.frontal: list[tuple[int, str]] = []  # (grade, rendered question restricted to frontal images)
        self.grades = [0] * (len(GRADES) + 1)  # questions per grade code, from UNRATED upwards
        self.n_answers = self.n_boxes = 0
        self._img_quality_json: dict[tuple, tuple[str, str]] = {}

    def _draw_grade(self) -> int:
        """Unrated, the scene graph's grade, or (rarely) a lower one in the page's proportions."""
        rng, s = self.rng, self.study.grade
        if rng.random() < P_UNRATED:
            return UNRATED
        if rng.random() < _KEEP_STUDY_GRADE[s]:
            return s
        return rng.choices(range(s), cum_weights=_LOWER_GRADE_CUM[s])[0]

    def _img_quality(self, locq: tuple) -> tuple[str, str]:
        """question_img_localization_quality JSON (all images, frontal images), cached per study."""
        rendered = self._img_quality_json.get(locq)
        if rendered is None:
            items = [f'"{image_id}":{q}' for image_id, q in zip(self.study.image_ids, locq)]
            rendered = ("{" + ",".join(items) + "}", "{" + ",".join(items[i] for i in self.study.frontal_idx) + "}")
            self._img_quality_json[locq] = rendered
        return rendered

    def add(
        self, tid: str, strategy: str, qtype: str, index: int, subject: str | None, question_json: str, variables: str
    ) -> None:
        """One question: grade, answers (rows + JSON, depth-first), question row and JSON."""
        study, choice = self.study, self.rng.choice
        qid = f"{tid}_{index:03d}"  # template + per-study index, reused across studies (datasets.md)
        grade = self._draw_grade()
        frontal = self.export_on and grade >= _B
        tier = self.question_tier(grade)
        tiers = self.img_tiers[grade + 1]
        image_ids = study.image_ids
        add_answer_row, add_answer_image_rows = self.add_answer_row, self.add_answer_image_rows
        repeat_qid = itertools.repeat(qid)
        anchor = UNRATED < grade < study.grade  # one main answer must carry exactly the question grade
        used: list[Source] = []

        def emit(source: Source, answer_type: str, level: int) -> tuple[str, str]:
            nonlocal anchor
            answer_id = len(used)
            used.append(source)
            if grade == UNRATED:
                quality = _UNRATED_ANSWER
            elif anchor and answer_type == MAIN:
                quality, anchor = choice(ANSWER_QUALITY[MAIN][0][grade]), False
            else:
                quality = choice(ANSWER_QUALITY[answer_type][1][grade])
            add_answer_row((qid, answer_id, answer_type, level, source.from_report, *quality[1:], tier))
            add_answer_image_rows(zip(repeat_qid, itertools.repeat(answer_id), image_ids, *source.img_columns, tiers))
            subs = [emit(child, DETAILS, level + 1) for child in source.children] if source.children else ()
            opening = f'{{"answer_id":{answer_id},"answer_type":"{answer_type}","answer_level":{level},'
            closing = f',{source.tail},"answer_quality":{quality[0]}}}'
            full = f'{opening}{source.head},"sub_answers":[{",".join([x[0] for x in subs])}]{closing}'
            if not frontal:
                return full, ""  # the frontal-only variant is needed only for exported questions
            return full, f'{opening}{source.head_frontal},"sub_answers":[{",".join([x[1] for x in subs])}]{closing}'

        answers = [emit(source, answer_type, 0) for source, answer_type in plan_answers(study, self.rng, tid, subject)]
        # [U] question-level extraction_quality = the scene graph's quality dict
        question_quality = _UNRATED_QUESTION if grade == UNRATED else choice(QUESTION_QUALITY[grade])
        report_answers = any(s.from_report for s in used)
        template_answers = not all(s.from_report for s in used)
        locq = tuple(map(min, *(s.locq for s in used))) if len(used) > 1 else tuple(used[0].locq)
        img_quality, img_quality_frontal = self._img_quality(locq)
        opening = (
            f'{{"question_id":"{qid}","question_type":"{qtype}","question_strategy":"{strategy}",'
            f'"variables":{variables},"obs_ids":[{",".join([s.obs_ref for s in used if s.obs_ref])}],'
            f'"contains_report_answers":{"true" if report_answers else "false"},'
            f'"contains_template_answers":{"true" if template_answers else "false"},'
            f'"extraction_quality":{study.quality_json},"question_img_localization_quality":'
        )
        closing = f',"question":{question_json},"answers":['
        ending = f'],"question_quality":{question_quality[0]}}}'
        self.full.append(f'{opening}{img_quality}{closing}{",".join([a[0] for a in answers])}{ending}')
        if frontal:
            self.frontal.append(
                (grade, f'{opening}{img_quality_frontal}{closing}{",".join([a[1] for a in answers])}{ending}')
            )
        self.add_question_row(
            (qid, qtype, strategy, report_answers, template_answers, len(used), grade, *question_quality[1:], tier)
        )
        self.add_question_image_rows(zip(repeat_qid, image_ids, locq, tiers))
        self.grades[grade + 1] += 1
        self.n_answers += len(used)
        self.n_boxes += sum([s.n_boxes for s in used])


class _Generator:
    """Streams one full sample: zips, metadata levels, exports, and the truth counts."""

    def __init__(
        self,
        out_dir: Path,
        cohort: list[StudySpec],
        *,
        seed: int,
        questions_per_study: float | None,
        exports: bool,
        member_prefix: bool,
        corrupt_member: str | None,
        evil_member: bool,
        progress: Callable[[int, int], None] | None,
    ):
        self.out_dir, self.cohort, self.seed, self.exports = out_dir, cohort, seed, exports
        self.progress, self.evil_member = progress, evil_member
        self.corrupt_member = None if corrupt_member is None else "s" + str(corrupt_member).lstrip("s")
        self.scale_once, self.scale_multi = _template_scales(questions_per_study)
        self.destinations = [("metadata", None)] + (list(_EXPORT_METADATA) if exports else [])
        self.buffers = {level: _LevelBuffer(level) for level in LEVELS}
        qa_prefix, graph_prefix = ("qa/", "scene_data/") if member_prefix else ("", "")
        archives = {"qa": ("qa.zip", qa_prefix), "scene": ("scene_data.zip", graph_prefix)}
        # [U] export zips: members prefixed by their own archive name, like the main zips
        self.export_archives = (
            {min_grade: (f"{rel}/qa.zip", f"{rel}/scene_graph.zip") for rel, min_grade in _EXPORT_ARCHIVES}
            if exports
            else {}
        )
        for qa_rel, graph_rel in self.export_archives.values():
            archives[qa_rel] = (qa_rel, qa_prefix)
            archives[graph_rel] = (graph_rel, "scene_graph/" if member_prefix else "")
        self.writer = _WriterClient(out_dir, self.destinations, archives)
        self._texts: dict[tuple[str, str | None], tuple[str, str]] = {}
        self._init_truth()

    def _init_truth(self) -> None:
        self.n_images = self.n_questions = self.n_answers = self.n_boxes = 0
        self.split_questions: Counter = Counter()
        self.type_questions: Counter = Counter()
        self.grade_questions = [0] * (len(GRADES) + 1)  # index grade + 1 (0 = unrated)
        self.tier_questions: Counter = Counter()
        self.positiveness: Counter = Counter()
        self.export_studies: Counter = Counter()

    # -- driving -------------------------------------------------------------------------------
    def run(self) -> dict:
        """Generate patient by patient, then finish the files and return the truth dict."""
        try:
            by_patient: dict[int, list[StudySpec]] = {}
            for spec in self.cohort:
                by_patient.setdefault(spec.subject_id, []).append(spec)
            done = 0
            for studies in by_patient.values():
                self._patient(studies)
                done += len(studies)
                if self.progress and (done % _PROGRESS_EVERY < len(studies) or done == len(self.cohort)):
                    self.progress(done, len(self.cohort))
            self._finish()
        except BaseException:
            self.writer.abort()
            raise
        return self._truth(len(by_patient))

    def _finish(self) -> None:
        """Flush every buffer, close files, then derive the q1M subsets from the written exports."""
        if self.evil_member:  # planted defect: a path-traversal member name
            self.writer.zip_member(
                "qa",
                "../../evil.qa.json",
                _dumps({"patient_id": "p00000000", "study_id": "s00000000", "questions": []}).encode(),
            )
        for level, buffer in self.buffers.items():
            self.writer.rows(level, *buffer.take())
        self.rows_written, self.answer_counts = self.writer.close()
        self.sample_counts = {}
        if self.exports:
            rng = random.Random(f"mimic-qba-q1M:{self.seed}")
            sources = {
                "exports/A_frontal/metadata": _A,
                "exports/A_frontal/metadata/Ap": _AP,
                "exports/A_frontal/metadata/App": _APP,
                "exports/B_frontal/metadata": _B,
            }
            for subset, source in _Q1M_SUBSETS:
                n = sum(c for tier, c in self.tier_questions.items() if tier >= sources[source])
                self.sample_counts[subset] = _write_question_sample(self.out_dir, subset, source, n, rng)

    def _drain(self) -> None:
        """Ship full row buffers to the writer (between patients, so study runs stay whole)."""
        for level, buffer in self.buffers.items():
            if len(buffer.rows) >= _FLUSH_ROWS:
                self.writer.rows(level, *buffer.take())

    def _patient(self, studies: list[StudySpec]) -> None:
        """All studies of one patient, then the patient row (its export tier = best study tier)."""
        times = [_timestamp(s) for s in studies]
        chronological = sorted(range(len(studies)), key=lambda i: (times[i], studies[i].study_id))
        previous = {i: (times[chronological[k - 1]] if k else None) for k, i in enumerate(chronological)}
        first, last = times[chronological[0]], times[chronological[-1]]
        tiers = []
        for i, spec in enumerate(studies):
            before = previous[i]
            since_prev = None if before is None else _nanoseconds(times[i] - before)
            tiers.append(self._study(spec, _nanoseconds(times[i] - first), since_prev))
        patient_id = f"p{studies[0].subject_id}"
        self.buffers["patient"].rows.append((patient_id, len(studies), _nanoseconds(last - first), max(tiers)))
        self._drain()

    # -- one study -----------------------------------------------------------------------------
    def _study(self, spec: StudySpec, since_first: int, since_prev: int | None) -> int:
        """Generate, serialize and buffer one study; returns its export tier."""
        rng = random.Random(f"mimic-qba:{self.seed}:{spec.study_id}")
        study = Study(spec, rng)
        questions = _StudyQuestions(study, rng, self.buffers, self.exports)
        for tid, strategy, qtype, subjects in self._question_plan(study, rng):
            for index, subject in enumerate(subjects):
                question_json, variables = self._texts_for(study, tid, subject)
                questions.add(tid, strategy, qtype, index, subject, question_json, variables)
            self.type_questions[tid] += len(subjects)
        self.n_questions += len(questions.full)
        self.split_questions[spec.split] += len(questions.full)
        self.n_answers += questions.n_answers
        self.n_boxes += questions.n_boxes
        for grade, n in enumerate(questions.grades, start=UNRATED):
            self.grade_questions[grade + 1] += n
        best = max((g for g, n in enumerate(questions.grades, start=UNRATED) if n), default=UNRATED)
        tier = best if study.has_frontal else _EXCLUDED
        if study.has_frontal:  # a question's export tier is its grade when its study has a frontal image
            for grade, n in enumerate(questions.grades, start=UNRATED):
                self.tier_questions[grade] += n
        else:
            self.tier_questions[_EXCLUDED] += len(questions.full)
        self._write_study_files(study, questions.full, questions.frontal, since_first, since_prev, tier)
        for buffer in self.buffers.values():
            buffer.end_study(study.patient_id, study.study_id)
        return tier

    def _question_plan(self, study: Study, rng: random.Random) -> list[tuple[str, str, str, list]]:
        """(template id, strategy, question_type, subjects) for every template asked in this study."""
        orders = _subject_orders(study, rng)
        richness = rng.uniform(0.8, 1.2)
        asks_abnormal = rng.random() < _TEMPLATE_MEAN["B01_describe_all"] * self.scale_once
        plan = []
        for tid, strategy, _, _ in TEMPLATES:
            subjects: list[str | None]
            if tid == "A_indication":
                subjects = [None] if study.indication and rng.random() < self.scale_once else []
            elif tid == "B14_describe_acquisition":
                subjects = [None] if rng.random() < _TEMPLATE_MEAN[tid] * self.scale_once else []
            elif tid in _ONCE_PER_STUDY:
                subjects = [None] if asks_abnormal else []
            else:
                kind = _SUBJECT_KIND[tid[:3]]
                mean = _TEMPLATE_MEAN[tid] * self.scale_multi * richness
                count = int(mean) + (rng.random() < mean - int(mean))
                subjects = list(orders[kind][:count])
            if subjects:
                # question_type without the template prefix, as in the page's JSON ("describe_all");
                # B12/D05 share "describe_device", the strategy or question_id tells them apart
                plan.append((tid, strategy, tid.split("_", 1)[1], subjects))
        return plan

    def _texts_for(self, study: Study, tid: str, subject: str | None) -> tuple[str, str]:
        """(question JSON string, variables JSON) - cached, except the study-specific indication."""
        if tid == "A_indication":
            assert study.indication is not None, "A_indication is planned only for studies with an indication"
            return _dumps(study.indication["indication_summary"]), "{}"
        key = (tid, subject)
        texts = self._texts.get(key)
        if texts is None:
            template = next(t[3] for t in TEMPLATES if t[0] == tid)
            if subject is None:
                texts = (_dumps(template), "{}")
            else:
                kind = _SUBJECT_KIND[tid[:3]]
                shown = SUBCAT_PHRASES[subject] if kind.endswith("subcat") else subject
                texts = (_dumps(template.format(subject=shown)), _dumps({_VARIABLE_NAME[kind]: subject}))
            self._texts[key] = texts
        return texts

    def _write_study_files(
        self,
        study: Study,
        qa_full: list[str],
        qa_front: list[tuple[int, str]],
        since_first: int,
        since_prev: int | None,
        tier: int,
    ) -> None:
        """Zip members (main and exports) plus the study and image metadata rows."""
        pid, sid, spec = study.patient_id, study.study_id, study.spec
        path = _study_path(pid, sid)
        for node in study.nodes.values():
            self.positiveness[node["positiveness"]] += 1
        procedure = _procedure(spec)
        # [U] sxxxxxxxx.metadata.json: the study row as nested JSON, timedeltas as pandas strings
        metadata_doc = _dumps(
            {
                "patient_id": pid,
                "study_id": sid,
                "quality": study.quality,
                "num_observations": len(study.nodes),
                "procedure": procedure,
                "timestamp_since_first": str(pd.Timedelta(since_first)),
                "timespan_since_prev": None if since_prev is None else str(pd.Timedelta(since_prev)),
            }
        ).encode()
        self.writer.zip_member("scene", f"{path}.scene_graph.json", _dumps(study.scene_graph()).encode())
        self.writer.zip_member("scene", f"{path}.metadata.json", metadata_doc)
        qa = f'{{"patient_id":"{pid}","study_id":"{sid}","questions":[{",".join(qa_full)}]}}'.encode()
        if sid == self.corrupt_member:
            qa = qa[: len(qa) // 2]  # planted defect: truncated, invalid JSON
        self.writer.zip_member("qa", f"{path}.qa.json", qa)
        frontal_graph = None
        for min_grade, (qa_zip, graph_zip) in self.export_archives.items():
            chosen = [text for grade, text in qa_front if grade >= min_grade]
            if not chosen:
                continue
            frontal_graph = frontal_graph or _dumps(study.scene_graph(study.frontal_idx)).encode()
            self.writer.zip_member(graph_zip, f"{path}.scene_graph.json", frontal_graph)
            self.writer.zip_member(graph_zip, f"{path}.metadata.json", metadata_doc)
            self.writer.zip_member(
                qa_zip,
                f"{path}.qa.json",
                f'{{"patient_id":"{pid}","study_id":"{sid}","questions":[{",".join(chosen)}]}}'.encode(),
            )
            self.export_studies[min_grade] += 1
        self.buffers["study"].rows.append(
            (pid, sid, *study.quality.values(), len(study.nodes), procedure, since_first, since_prev, tier)
        )
        image_quality = study.image_localization_quality()
        for image, frontal in zip(spec.images, study.frontal):
            orientation = "" if not image.view_position else "Recumbent" if image.view_position == "AP" else "Erect"
            self.buffers["image"].rows.append(
                (
                    pid,
                    sid,
                    image.dicom_id,
                    image.view_position,
                    orientation,
                    image.columns,
                    image.rows,
                    image_quality[image.dicom_id],
                    tier if frontal else _EXCLUDED,
                )
            )
        self.n_images += len(spec.images)

    def _truth(self, n_patients: int) -> dict:
        """Counts gathered while generating (never by re-reading the output)."""
        by_grade = {grade: self.grade_questions[code + 1] for code, grade in reversed(list(enumerate(GRADES)))}
        by_grade["unrated"] = self.grade_questions[0]
        exports: dict[str, dict[str, object]] = {}
        truth = {
            "studies": len(self.cohort),
            "patients": n_patients,
            "images": self.n_images,
            "questions": {
                "total": self.n_questions,
                "by_split": {split: self.split_questions.get(split, 0) for split in MIMIC_SPLITS},
                "by_type": dict(sorted(self.type_questions.items())),
                "by_grade": by_grade,
            },
            "sub_answers": {
                "total": self.n_answers,
                "by_level": {str(level): n for level, n in sorted(self.answer_counts["answer.answer_level"].items())},
                "by_type": {t: self.answer_counts["answer.answer_type"].get(t, 0) for t in ANSWER_TYPES},
            },
            "answer_boxes": self.n_boxes,
            "fine_tuning_questions": sum(n for tier, n in self.tier_questions.items() if tier >= _A),
            "pre_training_questions": sum(n for tier, n in self.tier_questions.items() if tier >= _B),
            "observations": {
                "total": sum(self.positiveness.values()),
                "by_positiveness": {p: self.positiveness.get(p, 0) for p in ("pos", "neg")},
            },
            "metadata_rows": self.rows_written["metadata"],
            "exports": exports,
        }
        if self.exports:
            for rel, min_grade in _EXPORT_ARCHIVES:
                exports[rel.split("/")[-1]] = {
                    "studies": self.export_studies[min_grade],
                    "rows": self.rows_written[f"{rel}/metadata"],
                }
            for rel, _ in _EXPORT_METADATA[1:3]:
                exports[rel.split("/", 1)[1]] = {"questions": self.rows_written[rel]["question"]}
            for subset, n in self.sample_counts.items():
                exports[subset.split("/", 1)[1]] = {"questions": n}
        return truth


# ----------------------------------------------------------------------------------------------
# Small static files and the entry point
# ----------------------------------------------------------------------------------------------
def _write_quality_mappings(path: Path) -> None:
    """quality_mappings.csv; columns are [U] (the real file is 4.8 KB and unseen)."""
    lines = ["field,code,label,grade,grade_if_related_information"]
    lines += [",".join(str(v) for v in row) for row in quality_mapping_rows()]
    path.write_text("\n".join(lines) + "\n")


def dataset_info() -> dict:
    """dataset_info.json: the sets of possible tag values ([U] key names)."""
    return {
        "entities": sorted(e.name for e in ENTITIES),
        "entity_parents": {e.name: e.parents for e in ENTITIES if e.parents},
        "regions": list(REGIONS),
        "region_parents": {name: parent for name, (parent, _, _) in REGIONS.items() if parent},
        "categories": sorted({c for e in ENTITIES for c in e.categories}),
        "subcategories": sorted({c for e in ENTITIES for c in e.subcategories}),
        "answer_types": list(ANSWER_TYPES),
        "modifiers": {key: list(values) for key, values in MODIFIERS.items()},
        "changes": list(CHANGES),
        "probabilities": ["positive", "likely", "may", "unlikely", "negative"],
        "certainties": ["certain", "likely", "uncertain"],
        "positiveness": ["pos", "neg"],
        "lateralities": sorted({lat for _, lat, _ in REGIONS.values()}),
        "child_types": list(CHILD_TYPES),
        "question_types": [tid for tid, _, _, _ in TEMPLATES],
        "question_strategies": sorted({strategy for _, strategy, _, _ in TEMPLATES}),
        "sections": ["FINDINGS", "IMPRESSION", "INDICATION", "HISTORY"],
    }


def write_samples(
    out_dir: Path,
    *,
    cohort: list[StudySpec] | None = None,
    patients: int = 20,
    seed: int = 0,
    questions_per_study: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    exports: bool = True,
    member_prefix: bool = True,
    corrupt_member: str | None = None,
    evil_member: bool = False,
) -> dict:
    """Write a MIMIC-Ext-CXR-QBA-shaped sample under out_dir and return its truth counts.

    cohort defaults to the shared MIMIC plan (plan_mimic_cohort(patients, seed)).
    questions_per_study overrides the mean number of questions (default ~185.6 as published).
    member_prefix=False drops the "qa/" / "scene_data/" member prefix (one loader assumes none).
    corrupt_member (a study_id, with or without the "s") gets a truncated qa.json; evil_member adds
    a path-traversal member "qa/../../evil.qa.json". Output is byte-identical for the same inputs.
    """
    out_dir = Path(out_dir)
    (out_dir / "metadata").mkdir(parents=True, exist_ok=True)
    cohort = plan_mimic_cohort(patients, seed) if cohort is None else list(cohort)
    _write_quality_mappings(out_dir / "quality_mappings.csv")
    info = json.dumps(dataset_info(), indent=2) + "\n"
    for rel in ["metadata"] + ([f"{rel}/metadata" for rel, _ in _EXPORT_ARCHIVES] if exports else []):
        (out_dir / rel).mkdir(parents=True, exist_ok=True)
        (out_dir / rel / "dataset_info.json").write_text(info)
    generator = _Generator(
        out_dir,
        cohort,
        seed=seed,
        questions_per_study=questions_per_study,
        exports=exports,
        member_prefix=member_prefix,
        corrupt_member=corrupt_member,
        evil_member=evil_member,
        progress=progress,
    )
    return generator.run()
