"""The embedded default data of credentialed datasets: generated samples, made once and cached.

With no source configured, a credentialed dataset reads these samples, so `cxr ingest` on a fresh
machine builds a warehouse with every dataset in it. MIMIC-CXR and MIMIC-Ext-CXR-QBA come from
one cohort plan (same patients, studies and images); CheXpert Plus reuses real patients from the
public CheXpert train.csv so it links to the `chexpert` partition.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..cachelock import filling
from ..errors import UnknownName
from .cohort import plan_mimic_cohort

DEFAULT_SEED = 0
DEFAULT_PATIENTS = {"mimic_cxr": 120, "mimic_qba": 120, "rexgradient": 300, "chexpert_plus": 150}
MARKER = ".cxr-samples.json"
GENERATOR_VERSION = 1  # bump when a generator's output changes, so cached samples are rebuilt


def write(
    dataset_id: str,
    out_dir: Path,
    *,
    patients: int,
    seed: int,
    cache: Path | None = None,
    progress: Callable[[str], None] = lambda m: None,
) -> dict:
    """Write one dataset's samples into out_dir and return the generator's truth."""
    if dataset_id == "mimic_cxr":
        from . import mimic_cxr

        return mimic_cxr.write_samples(out_dir, cohort=plan_mimic_cohort(patients, seed), seed=seed)
    if dataset_id == "mimic_qba":
        from . import mimic_qba

        return mimic_qba.write_samples(out_dir, cohort=plan_mimic_cohort(patients, seed), seed=seed)
    if dataset_id == "rexgradient":
        from . import rexgradient

        return rexgradient.write_samples(out_dir, patients=patients, seed=seed)
    if dataset_id == "chexpert_plus":
        from ..fetch import fetch_public
        from . import chexpert_plus

        train = None
        if cache is not None:
            train = fetch_public(cache, say=progress).dataset_dir("chexpert") / "train.csv.gz"
        return chexpert_plus.write_samples(out_dir, patients=patients, seed=seed, chexpert_train_csv=train)
    raise UnknownName(f"no sample generator for {dataset_id!r}")


def generated_datasets() -> list[str]:
    return list(DEFAULT_PATIENTS)


def ensure_default_samples(cache: Path, dataset_id: str, say: Callable[[str], None] = lambda m: None) -> Path:
    """<cache>/samples/<dataset>, generated on first use; published atomically by a rename."""
    folder = cache / "samples" / dataset_id
    patients = DEFAULT_PATIENTS[dataset_id]
    expected = {
        "dataset": dataset_id,
        "seed": DEFAULT_SEED,
        "patients": patients,
        "generator_version": GENERATOR_VERSION,
    }
    marker = folder / MARKER

    def current() -> bool:
        return (
            marker.exists() and {k: v for k, v in json.loads(marker.read_text()).items() if k in expected} == expected
        )

    if current():
        return folder
    with filling(cache, f"samples-{dataset_id}"):
        if current():  # another process generated them while this one waited
            return folder
        return _generate(cache, dataset_id, folder, expected, say)


def _generate(cache: Path, dataset_id: str, folder: Path, expected: dict, say: Callable[[str], None]) -> Path:
    patients = expected["patients"]
    say(f"generating {dataset_id} samples ({patients} patients, seed {DEFAULT_SEED}) in {folder}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dataset_id}-", dir=folder.parent))
    try:
        truth = write(dataset_id, tmp, patients=patients, seed=DEFAULT_SEED, cache=cache, progress=say)
        (tmp / MARKER).write_text(json.dumps({**expected, "truth": truth}, default=str))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
