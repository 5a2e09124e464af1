"""Cross-dataset SQL over reports: studies whose impression mentions pneumothorax, by dataset.

IU X-ray is the real OpenI archive; MIMIC-CXR is a generated sample in its native layout. The
expected counts are read here straight from the XML and the report text files.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

from warehouse import Warehouse
from warehouse.samples import mimic_cxr as mimic_cxr_samples
from warehouse.samples.cohort import plan_mimic_cohort

from .conftest import make_settings
from .test_iu_xray import ARCHIVE, _members

# MIMIC-CXR reports sometimes misspell the header (IMPRESSON:), as the real files do
MIMIC_IMPRESSION = re.compile(r"^\s*IMPRESSI?ON:(.*?)(?=^\s*[A-Z][A-Z /]+:|\Z)", re.S | re.M)


def _iu_expected(folder: Path) -> int:
    hits = 0
    for data in _members(folder / ARCHIVE).values():
        root = ET.fromstring(data)
        impression = " ".join((a.text or "") for a in root.iter("AbstractText") if a.get("Label") == "IMPRESSION")
        hits += "pneumothorax" in impression.lower()
    return hits


def _mimic_expected(folder: Path) -> int:
    hits = 0
    with zipfile.ZipFile(folder / "mimic-cxr-reports.zip") as archive:
        for name in archive.namelist():
            if name.endswith(".txt"):
                found = MIMIC_IMPRESSION.search(archive.read(name).decode())
                hits += bool(found and "pneumothorax" in found.group(1).lower())
    return hits


def test_impressions_mentioning_pneumothorax_by_dataset(tmp_path, cache_dir, public_data):
    mimic = tmp_path / "mimic_cxr"
    mimic_cxr_samples.write_samples(mimic, cohort=plan_mimic_cohort(60, 11), seed=11)
    wh = Warehouse(make_settings(tmp_path, cache_dir, mimic_cxr=mimic))
    wh.ingest(["iu_xray", "mimic_cxr"], say=lambda m: None)
    got = dict(
        tuple(r.values())
        for r in wh.sql("""
        SELECT r.dataset, count(DISTINCT r.study_id) AS studies
        FROM reports r JOIN studies s USING (dataset, study_id)
        WHERE r.impression ILIKE '%pneumothorax%'
        GROUP BY 1 ORDER BY 1""").to_pylist()
    )
    expected = {"iu_xray": _iu_expected(Path(public_data.root) / "iu_xray"), "mimic_cxr": _mimic_expected(mimic)}
    assert expected["iu_xray"] > 0 and expected["mimic_cxr"] > 0
    assert got == expected
