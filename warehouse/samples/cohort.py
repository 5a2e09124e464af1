"""A shared MIMIC cohort plan, so MIMIC-CXR and MIMIC-Ext-CXR-QBA samples describe the same people.

MIMIC-Ext-CXR-QBA is derived from MIMIC-CXR: its patients, studies and images are a subset of
MIMIC-CXR's. Generating both from one plan keeps cross-dataset joins (QBA questions about images
that carry MIMIC CheXpert labels) meaningful in the fixtures.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

MIMIC_SPLITS = ("train", "validate", "test")
# Published MIMIC-CXR-JPG split shares by patient: 64,586 / 500 / 293 of 65,379.
_SPLIT_WEIGHTS = (0.90, 0.06, 0.04)  # enlarged val/test so small samples still have every split


@dataclass(frozen=True)
class ImageSpec:
    dicom_id: str  # 5 groups of 8 hex chars joined by '-'
    view_position: str  # MIMIC ViewPosition value, e.g. PA, AP, LATERAL, LL, '' (blank)
    rows: int
    columns: int


@dataclass(frozen=True)
class StudySpec:
    subject_id: int  # 8 digits, starts with 1
    study_id: int  # 8 digits, starts with 5
    split: str  # train | validate | test (MIMIC spelling)
    study_date: int  # shifted YYYYMMDD, e.g. 21800506
    study_time: float  # HHMMSS.fff as MIMIC stores it (leading zeros lost)
    images: tuple[ImageSpec, ...] = field(default_factory=tuple)


def _dicom_id(rng: random.Random) -> str:
    return "-".join(f"{rng.getrandbits(32):08x}" for _ in range(5))


def plan_mimic_cohort(patients: int, seed: int = 0) -> list[StudySpec]:
    """Plan `patients` MIMIC subjects with 1-6 studies each and 1-4 images per study.

    Splits are assigned per patient (no patient in two splits), as in the official split.
    """
    rng = random.Random(f"mimic-cohort:{seed}")
    subject_ids = rng.sample(range(10_000_000, 20_000_000), patients)
    used_studies: set[int] = set()
    plan: list[StudySpec] = []
    for subject_id in sorted(subject_ids):
        split = rng.choices(MIMIC_SPLITS, weights=_SPLIT_WEIGHTS)[0]
        base_year = rng.randint(2110, 2200)
        for _ in range(rng.choice((1, 1, 2, 2, 3, 4, 6))):
            study_id = rng.randint(50_000_000, 59_999_999)
            while study_id in used_studies:
                study_id = rng.randint(50_000_000, 59_999_999)
            used_studies.add(study_id)
            year = base_year + rng.randint(0, 4)
            date = year * 10000 + rng.randint(1, 12) * 100 + rng.randint(1, 28)
            time = float(
                f"{rng.randint(0, 23)}{rng.randint(0, 59):02d}{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d}"
            )
            n_images = rng.choice((1, 2, 2, 2, 3, 4))
            views = ["PA", "LATERAL"] if n_images >= 2 and rng.random() < 0.6 else ["AP"]
            while len(views) < n_images:
                views.append(rng.choice(("AP", "PA", "LATERAL", "LL", "")))
            images = tuple(
                ImageSpec(_dicom_id(rng), v, rng.choice((2544, 3056, 2022)), rng.choice((3056, 2544, 2021)))
                for v in views[:n_images]
            )
            plan.append(StudySpec(subject_id, study_id, split, date, time, images))
    return plan
