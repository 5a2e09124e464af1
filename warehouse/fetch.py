"""Fetch the real public metadata that ships inside the torchxrayvision wheel.

The wheel (not the package: torch is never installed) carries the NIH ChestX-ray14, CheXpert,
IU X-ray and PadChest metadata files, and the expert label sets of Google's 2019 NIH re-read,
VinDr-CXR (VinBigData), RSNA Pneumonia and SIIM-ACR Pneumothorax. We download it with pip, check its sha256 against the
pin below, keep only its data/ files, and lay them out per dataset under the names each dataset
ships its files with, so the adapters read them exactly as they would read a real download.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .cachelock import filling
from .errors import CxrError

WHEEL_NAME = "torchxrayvision"
WHEEL_VERSION = "1.5.7"
WHEEL_FILE = f"{WHEEL_NAME}-{WHEEL_VERSION}-py3-none-any.whl"
# The sha256 PyPI publishes for this file.
WHEEL_SHA256 = "95f6c3475661f3515d4258deb0855bd5d1b1a56e0b65384251d3dd3fa61fac41"
DATA_PREFIX = f"{WHEEL_NAME}/data/"

# dataset id -> {name inside the wheel's data/: name the dataset itself ships it under}
LAYOUT: dict[str, dict[str, str]] = {
    "nih_cxr14": {
        "Data_Entry_2017_v2020.csv.gz": "Data_Entry_2017_v2020.csv.gz",
        "BBox_List_2017.csv.gz": "BBox_List_2017.csv.gz",
        # Google's adjudicated radiologist labels for 4,376 NIH images (Majkowski et al. 2019), as
        # torchxrayvision merges them with the NIH columns; read by the nih_cxr14 adapter.
        "google2019_nih-chest-xray-labels.csv.gz": "google2019_nih-chest-xray-labels.csv.gz",
    },
    # CheXpert's download unpacks to CheXpert-v1.0-small/{train.csv,valid.csv,train/,valid/};
    # the wheel carries only train.csv (gzipped).
    "chexpert": {"chexpert_train.csv.gz": "train.csv.gz"},
    "iu_xray": {
        "NLMCXR_reports.tgz": "NLMCXR_reports.tgz",
        "nlmcxr_dicom_metadata.csv.gz": "nlmcxr_dicom_metadata.csv.gz",
    },
    "padchest": {
        "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz": "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz",
    },
    # The VinBigData Kaggle competition ships VinDr-CXR's training annotations as train.csv.
    "vindr_cxr": {"vinbigdata-train.csv.gz": "train.csv.gz"},
    # The RSNA Kaggle download has stage_2_train_labels.csv (here still in its zip); the DICOM header
    # table is torchxrayvision's extract of the stage 2 training DICOMs.
    "rsna_pneumonia": {
        "kaggle_stage_2_train_labels.csv.zip": "stage_2_train_labels.csv.zip",
        "kaggle_stage_2_train_images_dicom_headers.csv.gz": "stage_2_train_images_dicom_headers.csv.gz",
    },
    "siim_pneumothorax": {"siim-pneumothorax-train-rle.csv.gz": "train-rle.csv.gz"},
}
_MARKER = ".complete"


class FetchError(CxrError, RuntimeError):
    """The public metadata could not be fetched or did not verify."""


@dataclass(frozen=True)
class PublicData:
    root: Path  # <cache>/public
    fetched_now: bool

    def dataset_dir(self, dataset_id: str) -> Path:
        return self.root / dataset_id


def is_fetched(cache: Path) -> bool:
    marker = cache / "public" / _MARKER
    return marker.exists() and marker.read_text().strip() == WHEEL_SHA256


def fetch_public(cache: Path, *, say: Callable[[str], None] = print, wheel: Path | None = None) -> PublicData:
    """Download, verify and unpack the public metadata into <cache>/public; a no-op when done before.

    `wheel` (or the CXR_PUBLIC_WHEEL environment variable) may name an already-downloaded wheel
    file, which is verified the same way.
    """
    root = cache / "public"
    if is_fetched(cache):
        _complete_layout(root)
        return PublicData(root, fetched_now=False)
    with filling(cache, "public"):
        if is_fetched(cache):  # another process fetched it while this one waited
            _complete_layout(root)
            return PublicData(root, fetched_now=False)
        return _fetch(cache, root, say, wheel)


def _fetch(cache: Path, root: Path, say: Callable[[str], None], wheel: Path | None) -> PublicData:
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cxr-fetch-", dir=root.parent) as tmp_name:
        tmp = Path(tmp_name)
        wheel = wheel or (Path(os.environ["CXR_PUBLIC_WHEEL"]) if os.environ.get("CXR_PUBLIC_WHEEL") else None)
        if wheel is None:
            say(f"Downloading the {WHEEL_NAME} {WHEEL_VERSION} wheel with pip (no dependencies, ~29 MB)…")
            wheel = _pip_download(tmp)
        _verify(wheel)
        say(f"Verified sha256 {WHEEL_SHA256[:16]}…; unpacking its data/ files")
        staging = tmp / "public"
        _unpack(wheel, staging)
        if root.exists():
            shutil.rmtree(root)
        os.replace(staging, root)  # readers see the whole layout or none of it
    return PublicData(root, fetched_now=True)


def _pip_download(dest: Path) -> Path:
    requirements = dest / "requirements.txt"
    requirements.write_text(f"{WHEEL_NAME}=={WHEEL_VERSION} --hash=sha256:{WHEEL_SHA256}\n")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--require-hashes",
        "--disable-pip-version-check",
        "-r",
        str(requirements),
        "-d",
        str(dest),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = dest / WHEEL_FILE
    if proc.returncode != 0 or not wheel.exists():
        raise FetchError(f"pip could not download {WHEEL_FILE}:\n{proc.stderr.strip()[-2000:]}")
    return wheel


def _verify(wheel: Path) -> None:
    digest = hashlib.sha256()
    with open(wheel, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != WHEEL_SHA256:
        raise FetchError(f"{wheel}: sha256 {digest.hexdigest()} does not match the pinned {WHEEL_SHA256}")


def _unpack(wheel: Path, staging: Path) -> None:
    raw = staging / "_wheel_data"
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            if info.filename.startswith(DATA_PREFIX) and not info.is_dir():
                name = info.filename.removeprefix(DATA_PREFIX)
                if "/" in name or name.startswith("."):
                    continue
                target = raw / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    _lay_out(staging)
    (staging / _MARKER).write_text(WHEEL_SHA256 + "\n")


def _lay_out(root: Path) -> None:
    """Hard-link each dataset's files from <root>/_wheel_data under their native names (missing ones only)."""
    raw = root / "_wheel_data"
    for dataset_id, files in LAYOUT.items():
        folder = root / dataset_id
        for wheel_name, native_name in files.items():
            target = folder / native_name
            if target.exists():
                continue
            source = raw / wheel_name
            if not source.exists():
                raise FetchError(f"{WHEEL_FILE} has no data/{wheel_name}")
            folder.mkdir(parents=True, exist_ok=True)
            partial = folder / f".{native_name}.{os.getpid()}.partial"
            if partial.exists():
                partial.unlink()
            os.link(source, partial)
            os.replace(partial, target)  # a reader sees the whole file or none of it


def _complete_layout(root: Path) -> None:
    """A cache unpacked before LAYOUT named a file gets it from the kept data/ files, with no download.

    The marker stays the wheel's sha256 alone, so caches shared with older checkouts stay valid for them.
    """
    if all((root / d / n).exists() for d, files in LAYOUT.items() for n in files.values()):
        return
    _lay_out(root)
