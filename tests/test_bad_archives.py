"""Hostile or empty report archives: IU's tgz and MIMIC-CXR's reports zip, rebuilt in tmp from real/sample files.

An empty source must fail loudly rather than publish an empty dataset, a member path that leaves the
archive refuses the archive, and an odd member is read or quarantined by name, never skipped unrecorded.
"""

from __future__ import annotations

import io
import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import polars as pl
import pytest

from warehouse.samples.defaults import ensure_default_samples
from warehouse.sources import get_adapter
from warehouse.sources.base import SourceError, SourceFolder

IU_ARCHIVE = "NLMCXR_reports.tgz"
IU_METADATA = "nlmcxr_dicom_metadata.csv.gz"
MIMIC_ZIP = "mimic-cxr-reports.zip"
KEPT = 12  # real IU reports per rebuilt archive: enough to mix cases, small enough to stay fast


@pytest.fixture(scope="module")
def iu_reports(public_data) -> list[tuple[str, bytes]]:
    """The first KEPT report members of the real archive, (name, bytes)."""
    with tarfile.open(Path(public_data.root) / "iu_xray" / IU_ARCHIVE, "r:gz") as tar:
        files = (m for m in tar if m.isfile())
        return [(m.name, tar.extractfile(m).read()) for m, _ in zip(files, range(KEPT))]


def iu_folder(public_data, folder: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    """An IU source folder whose tgz holds `members` (a TarInfo as is, or a file's name and bytes)."""
    folder.mkdir(parents=True)
    shutil.copy(Path(public_data.root) / "iu_xray" / IU_METADATA, folder / IU_METADATA)
    with tarfile.open(folder / IU_ARCHIVE, "w:gz") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
                continue
            name, data = member
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return folder


def read_iu(folder: Path):
    return get_adapter("iu_xray").read(SourceFolder(str(folder)))


def tar_entry(name: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    if kind == tarfile.SYMTYPE:
        info.linkname = "1.xml"
    return info


@pytest.mark.parametrize(
    "members", [[], [tar_entry("ecgen-radiology", tarfile.DIRTYPE)]], ids=["no-members", "dir-only"]
)
def test_iu_empty_archive_is_an_error(public_data, tmp_path, members):
    folder = iu_folder(public_data, tmp_path / "iu", members)
    with pytest.raises(SourceError, match=r"NLMCXR_reports\.tgz: holds no report XML files"):
        read_iu(folder)


def test_iu_archive_of_only_bad_members_is_an_error(public_data, tmp_path):
    folder = iu_folder(public_data, tmp_path / "iu", [("ecgen-radiology/1.xml", b"<eCitation"), ("README", b"x")])
    with pytest.raises(SourceError, match=r"NLMCXR_reports\.tgz: holds no readable report XML: all 2 members"):
        read_iu(folder)


@pytest.mark.parametrize("name", ["../evil.xml", "ecgen-radiology/../../evil.xml", "/tmp/evil.xml"])
def test_iu_member_leaving_the_archive_refuses_it(public_data, tmp_path, iu_reports, name):
    folder = iu_folder(public_data, tmp_path / "iu", [*iu_reports[:3], (name, iu_reports[3][1]), *iu_reports[4:]])
    with pytest.raises(SourceError, match=rf"NLMCXR_reports\.tgz: member '{re.escape(name)}' has a path that leaves"):
        read_iu(folder)


def test_iu_nested_and_odd_members_are_read_or_quarantined_by_name(public_data, tmp_path, iu_reports):
    """Report-named files in other folders are read; every other file member is one quarantine row."""
    base = [(name.split("/")[-1], data) for name, data in iu_reports]  # `1.xml`, ...
    members = [
        *(("ecgen-radiology/" + name, data) for name, data in base[:4]),
        *(("NLMCXR/ecgen-radiology/" + name, data) for name, data in base[4:8]),
        *(("ecgen-radiology/nested/" + name, data) for name, data in base[8:]),
        ("ecgen-radiology/copy/" + base[0][0], base[0][1]),  # same uId twice
        ("ecgen-radiology/notes.txt", b"not a report"),
        ("ecgen-radiology/nested/report.xml", base[1][1]),  # not OpenI's <n>.xml name
        tar_entry("ecgen-radiology/link.xml", tarfile.SYMTYPE),
        tar_entry("ecgen-radiology/nested", tarfile.DIRTYPE),
    ]
    folder = iu_folder(public_data, tmp_path / "iu", members)
    with tarfile.open(folder / IU_ARCHIVE, "r:gz") as tar:
        non_dirs = [m.name for m in tar if not m.isdir()]
    result = read_iu(folder)
    published = result.tables["reports"]
    quarantined = result.rejected().filter(pl.col("target_table") == "reports")
    assert published.height + quarantined.height == len(non_dirs)
    assert published.height == KEPT and published["study_id"].n_unique() == KEPT
    assert {f"{IU_ARCHIVE}/{m[0]}" for m in members[:KEPT]} == set(published["source_file"])
    archive = f"{folder}/{IU_ARCHIVE}"  # quarantine names the file where it lies, reports relative to the root
    reasons = dict(zip(quarantined["source_file"], quarantined["reason"]))
    odd = {f"{archive}/{name}" for name in non_dirs} - {f"{archive}/{m[0]}" for m in members[:KEPT]}
    assert set(reasons) == odd and len(odd) == 4
    assert reasons[f"{archive}/ecgen-radiology/copy/{base[0][0]}"].startswith("duplicate report")
    assert reasons[f"{archive}/ecgen-radiology/notes.txt"].startswith("not a report member")
    assert reasons[f"{archive}/ecgen-radiology/link.xml"].endswith("a link or special file")


@pytest.fixture
def mimic_folder(cache_dir, tmp_path) -> Path:
    """A private copy of the default MIMIC-CXR samples, whose reports zip each test rebuilds."""
    folder = tmp_path / "mimic_cxr"
    shutil.copytree(ensure_default_samples(cache_dir, "mimic_cxr", say=lambda m: None), folder)
    return folder


def rebuild_zip(folder: Path, extra: dict[str, bytes] | None = None, keep: bool = False) -> None:
    """Rewrite the reports zip with its members (keep) or none, plus `extra` members."""
    path = folder / MIMIC_ZIP
    old = {}
    if keep:
        with zipfile.ZipFile(path) as archive:
            old = {info.filename: archive.read(info) for info in archive.infolist() if not info.is_dir()}
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in {**old, **(extra or {})}.items():
            archive.writestr(name, data)


@pytest.mark.parametrize("extra", [None, {"files/": b"", "README.txt": b"x"}], ids=["no-members", "no-reports"])
def test_mimic_empty_reports_zip_is_an_error(mimic_folder, extra):
    rebuild_zip(mimic_folder, extra)
    with pytest.raises(SourceError, match=r"mimic-cxr-reports\.zip: holds no report files"):
        get_adapter("mimic_cxr").read(SourceFolder(str(mimic_folder)))  # before any batch is asked for


@pytest.mark.parametrize("name", ["../s1.txt", "files/p10/../../../s1.txt", "/files/p10/p10000032/s1.txt"])
def test_mimic_member_leaving_the_archive_refuses_it(mimic_folder, name):
    rebuild_zip(mimic_folder, {name: b"FINAL REPORT\n IMPRESSION: none.\n"}, keep=True)
    with pytest.raises(SourceError, match=rf"reports\.zip: member '{re.escape(name)}' has a path that leaves"):
        get_adapter("mimic_cxr").read(SourceFolder(str(mimic_folder)))
