"""IU X-ray (OpenI, NLMCXR): NLMCXR_reports.tgz and nlmcxr_dicom_metadata.csv.

Format notes, checked against the real files:
- NLMCXR_reports.tgz holds `ecgen-radiology/<n>.xml`, 3,955 reports. It is streamed with tarfile,
  never extracted. A member that is not well-formed XML (or has no `<uId id=...>`) becomes one
  quarantine row naming the member.
- Odd archives. A member path that leaves the archive (absolute or with a `..` part) is a SourceError
  naming it: the archive is refused whole, as for zips. A file named like a report (`<n>.xml`) in any
  other folder (a repackaged `NLMCXR/ecgen-radiology/`, a nested subfolder) is read like the others;
  every other member but a directory (another file, a link) is a quarantine row naming it, as is a
  second report with a uId already read. An archive without one readable report is a SourceError, so
  an empty source never publishes an empty dataset.
- One report per XML: study_id = `<uId id="CXR<n>">`. IU has no patient ids (every report is its own
  unit, as torchxrayvision treats it), so patient_id = study_id: a patient seen twice counts twice.
- Sections: the four `<AbstractText Label=...>` (COMPARISON, INDICATION, FINDINGS, IMPRESSION, in that
  order in every file); empty text is null (COMPARISON empty in 622 files, FINDINGS 530, INDICATION 90,
  IMPRESSION 34). full_text = every non-empty AbstractText as a `LABEL: text` line; a label other than
  the four stays only in full_text (empty, not null, for the 28 reports whose every AbstractText is
  empty: the report exists, it says nothing). Runs of whitespace in a text become one space. De-identified
  words read `XXXX`.
- Images: each `<parentImage id=...>` is an image of its report: 7,470 images; 104 reports have none.
  The id is kept as written (`CXR1_1_IM-0001-3001`); the path is `<id>.png`, the name in OpenI's
  NLMCXR_png.tgz.
- nlmcxr_dicom_metadata.csv (torchxrayvision's table of the DICOM headers, one row per image, 7,469 rows)
  has 176 columns, one of them unnamed, and multi-line fields (the code sequences). `imageid` matches
  the XML id except for the two `CXR<n>_<k>_IM-...` ids, whose metadata row drops the `_<k>`
  (`CXR1_IM-0001-3001`); the join removes it. CXR1000_IM-0003-1001 has no metadata row.
- `View Position`: PA 3,593, empty 2,586 (view UNKNOWN), LL 717, AP 423, LATERAL 119, RL 29 and
  `LARGE LATERAL` 2, read as LATERAL. `Rows`/`Columns` give height/width.
- `Patient's Sex` is empty in every row, so every patient's sex is U (sex_source null).
- `Patient's Birth Date` and `Study Date` (YYYYMMDD) are filled in every row and constant within a report.
  [U] per docs/datasets.md whether they are real or shifted; either way their difference is usable:
  ages run 17-100 (mean 50) and follow the findings (mean 41 for `normal`, 73 for `Atherosclerosis`).
  age_years = completed years between the two dates; age_source = the birth date as written.
- MeSH: `<major>` (manual coding) and `<automatic>` (machine indexing) terms are positive labels
  (labeler mesh, method major/automatic); `normal` and `No Indexing` are kept as labels. A term is
  `Heading/qualifier/...` (`Pulmonary Atelectasis/base/left`); raw_label is the term as written
  (outer spaces stripped). Qualifiers that name places become `locations`; the finding comes from the
  heading, or, when the heading is itself a body part (`Lung/hypoinflation`, `Aorta/tortuous`),
  from the heading and its first non-place qualifier. `<automatic>` terms are free phrases without
  qualifiers. A term listed twice in a report (276 reports list a term both as major and automatic)
  is one label row; major wins the method.
- No official split: every study is `unassigned`.
- Nothing of the metadata is dropped (SOURCE_FIELDS names each column's destination). Canonical:
  `Pixel Spacing` (DICOM row\\column spacing, so y then x) -> pixel_spacing_y / pixel_spacing_x, or
  `Imager Pixel Spacing` (at the detector) when Pixel Spacing is empty (2,547 rows); `Patient Orientation`
  (`['L', 'F']`) -> patient_orientation `L\\F`; `Manufacturer` -> studies.manufacturer and `Study Time`
  (HHMMSS) -> studies.study_time (both empty in every real row). Every other column, and both raw
  spacings, go to images.source_attributes, blank values left out; the unnamed column 158 is keyed
  `unnamed_158`. visit_order is 1 everywhere: IU has no patient ids, each report is its own patient.
"""

from __future__ import annotations

import re
import tarfile
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass, field

import polars as pl

from .. import findings, text
from . import values
from .base import DatasetInfo, SourceError, SourceFolder, SourceResult
from .csvread import read_csv
from .qba_stream import leaves_root
from .quarantine import QUARANTINE_COLUMNS, empty_quarantine, quarantine_rows

INFO = DatasetInfo(
    id="iu_xray",
    name="IU X-ray (Indiana University Chest X-ray Collection, OpenI)",
    version="NLMCXR 2013-08-01",
    access="open",
    default_data="public",
    tables=("patients", "studies", "images", "reports", "labels"),
    citation="Demner-Fushman D, Kohli MD, Rosenman MB, et al. Preparing a collection of radiology examinations "
    "for distribution and retrieval. J Am Med Inform Assoc 2016;23(2):304-310.",
    homepage="https://openi.nlm.nih.gov/faq#collection",
    licence='unknown',
    licence_url=None,
    licence_note='Downloadable from Open-i without registration; each report XML carries a licenseType field, but no licence was confirmed here.',
    bibtex="""@article{demnerfushman2016iuxray,
  author = {Demner-Fushman, Dina and Kohli, Marc D. and Rosenman, Marc B. and Shooshan, Sonya E. and Rodriguez, Laritza and Antani, Sameer and Thoma, George R. and McDonald, Clement J.},
  title = {Preparing a collection of radiology examinations for distribution and retrieval},
  journal = {Journal of the American Medical Informatics Association},
  volume = {23},
  number = {2},
  pages = {304--310},
  year = {2016},
  doi = {10.1093/jamia/ocv080}
}""",
)

REPORTS_FILE = "NLMCXR_reports.tgz"
METADATA_FILE = "nlmcxr_dicom_metadata.csv"
REPORT_MEMBER = re.compile(r"^(?:\./)?ecgen-radiology/[^/]+\.xml$")
NESTED_REPORT = re.compile(r"(?:^|/)\d+\.xml$")  # OpenI's report file name, found in another folder
SECTIONS = {"COMPARISON": "comparison", "INDICATION": "indication", "FINDINGS": "findings", "IMPRESSION": "impression"}
RAW_RECORD_LIMIT = 64 << 10  # quarantine keeps a bad member's text up to this size

METADATA_NAMES = (
    'imageid',
    'Accession Number',
    'Acquisition Device Processing Code',
    'Approval Status',
    'Bits Allocated',
    'Bits Stored',
    'Body Part Examined',
    'Cassette Orientation',
    'Cassette Size',
    'Collimator/grid Name',
    'Columns',
    'Contrast/Bolus Agent',
    'Contrast/Bolus Total Dose',
    'Contrast/Bolus Volume',
    'Exposure',
    'Exposures on Plate',
    'Filter Type',
    'Focal Spot(s)',
    'High Bit',
    'Image Type',
    'Imager Pixel Spacing',
    'Instance Creation Date',
    'Instance Creation Time',
    'Instance Number',
    'KVP',
    'LUT Descriptor',
    'LUT Explanation',
    'Laterality',
    'Manufacturer',
    'Modality',
    'Patient ID',
    'Patient Orientation',
    'Patient Position',
    "Patient's Birth Date",
    "Patient's Name",
    "Patient's Sex",
    'Photometric Interpretation',
    'Pixel Representation',
    'Pixel Spacing',
    'Plate Type',
    'Polarity',
    'Private Creator',
    "Referring Physician's Name",
    'Requested Procedure ID',
    'Rescale Intercept',
    'Rescale Slope',
    'Rescale Type',
    'Rows',
    'SOP Class UID',
    'SOP Instance UID',
    'Samples per Pixel',
    'Sensitivity',
    'Series Instance UID',
    'Series Number',
    'Source Number',
    'Source Type',
    'Specific Character Set',
    'Study Date',
    'Study ID',
    'Study Instance UID',
    'Study Status ID',
    'Study Time',
    'View Position',
    'filename',
    'Study Priority ID',
    'Anatomic Region Sequence',
    'Burned In Annotation',
    'Code Meaning',
    'Code Value',
    'Coding Scheme Designator',
    'Collimator Left Vertical Edge',
    'Collimator Lower Horizontal Edge',
    'Collimator Right Vertical Edge',
    'Collimator Shape',
    'Collimator Upper Horizontal Edge',
    'Content Date',
    'Content Time',
    'Date of Last Detector Calibration',
    'Detector Manufacturer Name',
    "Detector Manufacturer's Model Name",
    'Detector Mode',
    'Detector Temperature',
    'Detector Time Since Last Exposure',
    'Detector Type',
    'Distance Source to Detector',
    'Distance Source to Patient',
    'Entrance Dose',
    'Estimated Radiographic Magnification Factor',
    'Exposure Control Mode',
    'Exposure Dose Sequence',
    'Exposure Time',
    'Exposure Time in uS',
    'Exposure in uAs',
    'Field of View Horizontal Flip',
    'Field of View Origin',
    'Field of View Rotation',
    'Film Consumption Sequence',
    'Filter Material',
    'Grid',
    'Image Laterality',
    'Image and Fluoroscopy Area Dose Product',
    'Issue Date of Imaging Service Request',
    'Lossy Image Compression',
    'Performed Procedure Step Start Date',
    'Performed Procedure Step Start Time',
    'Performed Procedure Step Status',
    'Pixel Intensity Relationship',
    'Pixel Intensity Relationship Sign',
    'Positioner Type',
    'Presentation Intent Type',
    'Presentation LUT Shape',
    'Reason for the Requested Procedure',
    'Relative X-Ray Exposure',
    'Requested Procedure Priority',
    'Spatial Resolution',
    'Time of Last Detector Calibration',
    'Total Number of Exposures',
    'Window Center',
    'Window Width',
    'Breed Registration Sequence',
    'Quality Control Image',
    'Window Center & Width Explanation',
    'Acquisition Number',
    'Date of Last Calibration',
    'Detector Conditions Nominal Flag',
    'Grid Focal Distance',
    'X-Ray Tube Current',
    'Generator Power',
    'Postprocessing Function',
    'Processing Function',
    'Time of Last Calibration',
    'Images in Acquisition',
    'Largest Image Pixel Value',
    'Smallest Image Pixel Value',
    'Comments on Radiation Dose',
    'Conversion Type',
    'Detector Active Dimension(s)',
    'Detector Active Shape',
    'Detector Binning',
    'Detector Configuration',
    'Detector Element Physical Size',
    'Detector Element Spacing',
    'Exposure Control Mode Description',
    'Field of View Dimension(s)',
    'Field of View Shape',
    'Filter Thickness Maximum',
    'Filter Thickness Minimum',
    'Patient Gantry Relationship Code Sequence',
    'Patient Orientation Code Sequence',
    'Positioner Secondary Angle',
    'Vertices of the Polygonal Collimator',
    'View Code Sequence',
    'View Modifier Code Sequence',
    'Annotation Display Format ID',
    'Border Density',
    'Film Orientation',
    'Image Display Format',
    'Trim',
    '',
    'Context Group Version',
    'Context Identifier',
    'Mapping Resource',
    'Pixel Aspect Ratio',
    'Anode Target Material',
    'Body Part Thickness',
    'Compression Force',
    'Entrance Dose in mGy',
    'Phototimer Setting',
    'Positioner Primary Angle',
    'Number of Frames',
    'Date of Secondary Capture',
    'Secondary Capture Device ID',
    'Secondary Capture Device Manufacturer',
    "Secondary Capture Device Manufacturer's Model Name",
    'Secondary Capture Device Software Versions',
    'Time of Secondary Capture',
)
METADATA_HEADER = ",".join(METADATA_NAMES)
# All text: a value that does not convert is quarantined here, the row (and its image) kept.
METADATA_COLUMNS = {(name or f"unnamed_{i}"): "VARCHAR" for i, name in enumerate(METADATA_NAMES)}
_CANONICAL = {
    "imageid": "images.image_id",
    "Columns": "images.width",
    "Rows": "images.height",
    "Pixel Spacing": ("images.pixel_spacing_x", "images.pixel_spacing_y", "images.source_attributes"),
    "Imager Pixel Spacing": ("images.pixel_spacing_x", "images.pixel_spacing_y", "images.source_attributes"),
    "Patient Orientation": "images.patient_orientation",
    "Manufacturer": "studies.manufacturer",
    "Patient's Birth Date": ("patients.birth_year", "studies.age_years", "studies.age_source"),
    "Patient's Sex": ("patients.sex", "patients.sex_source"),
    "Study Date": "studies.study_date",
    "Study Time": "studies.study_time",
    "View Position": ("images.view_position", "images.view_source"),
}
SOURCE_FIELDS = {METADATA_FILE: {name: _CANONICAL.get(name, "images.source_attributes") for name in METADATA_NAMES}}
# source_attributes keys (and frame columns) of the columns without a name
ATTRIBUTE_KEYS = {name: f"unnamed_{i}" for i, name in enumerate(METADATA_NAMES) if name == ""}
VIEW_WORDS = {"LARGE LATERAL": "LATERAL"}  # IU's own word, before the shared harmonizer
SPLIT_IMAGE_ID = r"^(CXR\d+)_\d+_(IM-)"  # CXR1_1_IM-0001-3001 -> metadata's CXR1_IM-0001-3001

# MeSH qualifiers that say where (lower case); the others say how (mild, tortuous, ...).
PLACES = frozenset(
    {
        "lung",
        "right",
        "left",
        "base",
        "bilateral",
        "apex",
        "hilum",
        "lingula",
        "lower lobe",
        "middle lobe",
        "upper lobe",
        "azygos lobe",
        "pulmonary alveoli",
        "bronchi",
        "pleura",
        "pleural sinus",
        "costophrenic angle",
        "cardiophrenic angle",
        "sulcus",
        "diaphragm",
        "mediastinum",
        "retrocardiac",
        "supracardiac",
        "paratracheal",
        "trachea",
        "trachea, carina",
        "esophagus",
        "lymph nodes",
        "heart",
        "heart atria",
        "heart ventricles",
        "aortic valve",
        "mitral valve",
        "aorta",
        "aorta, thoracic",
        "pulmonary artery",
        "blood vessels",
        "coronary vessels",
        "thorax",
        "abdomen",
        "neck",
        "breast",
        "adipose tissue",
        "ribs",
        "sternum",
        "clavicle",
        "humerus",
        "shoulder",
        "spine",
        "cervical vertebrae",
        "thoracic vertebrae",
        "lumbar vertebrae",
        "anterior",
        "posterior",
    }
)
# Headings that name a body part, not a finding: their first non-place qualifier is the finding.
ANATOMY_HEADINGS = PLACES | {"cardiac shadow", "epicardial fat", "bone and bones"}
METHOD_ORDER = {"major": 0, "automatic": 1}


@dataclass
class ReportXml:
    """What one report file says."""

    study_id: str
    member: str
    sections: dict[str, str | None]
    full_text: str | None
    image_ids: list[str] = field(default_factory=list)
    mesh: list[tuple[str, str]] = field(default_factory=list)  # (method, term)


class IuXray:
    info = INFO

    def source_files(self, src: SourceFolder) -> list[str]:
        return [src.require(REPORTS_FILE)] + [n for n in [src.first_existing(METADATA_FILE)] if n]

    def read(self, src: SourceFolder, progress=None, related=None) -> SourceResult:
        archive = src.require(REPORTS_FILE)
        reports, quarantine = _read_archive(src, archive)
        files, notes = [archive], []
        metadata_file = src.first_existing(METADATA_FILE)
        images = _images(reports)
        if metadata_file:
            metadata, rejected = _read_metadata(src, metadata_file)
            quarantine += rejected
            files.append(metadata_file)
            images = images.join(metadata, on="_metadata_id", how="left", validate="m:1")
            unmatched = metadata.join(images, on="_metadata_id", how="anti").height
            if unmatched:
                notes.append(f"{unmatched} rows of {metadata_file} match no image of a report")
        else:
            images = images.with_columns(_no_metadata())
            notes.append(f"no {METADATA_FILE}: views unknown, no image sizes, sexes, dates or ages")
        tables = {
            "patients": _patients(reports, images),
            "studies": _studies(reports, images),
            "images": _image_table(images),
            "reports": _reports(reports, archive),
            "labels": _labels(reports),
        }
        return SourceResult(tables, quarantine, files, notes)


def _read_archive(src: SourceFolder, archive: str) -> tuple[list[ReportXml], list[pl.DataFrame]]:
    """Parse every report XML of the archive as it streams by; other members become quarantine rows."""
    reports: list[ReportXml] = []
    bad: list[dict] = []
    seen: dict[str, str] = {}
    where = src.display(archive)
    try:
        with src.open(archive) as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
            for member in tar:
                if leaves_root(member.name):
                    raise SourceError(
                        where,
                        f"member {member.name!r} has a path that leaves the dataset "
                        "(absolute or '..'); the archive is refused and nothing is ingested",
                    )
                if member.isdir():
                    continue
                if not (member.isfile() and (REPORT_MEMBER.match(member.name) or NESTED_REPORT.search(member.name))):
                    kind = "a file" if member.isfile() else "a link or special file"
                    bad.append(
                        _bad_member(
                            where, member.name, f"not a report member (expected ecgen-radiology/<n>.xml): {kind}", None
                        )
                    )
                    continue
                content = tar.extractfile(member)
                assert content is not None, "a regular file member has content"
                data = content.read()
                try:
                    report = _parse_report(data, member.name)
                except ValueError as e:
                    bad.append(_bad_member(where, member.name, str(e), data))
                    continue
                if report.study_id in seen:
                    bad.append(
                        _bad_member(
                            where,
                            member.name,
                            f"duplicate report {report.study_id}, already read from {seen[report.study_id]}",
                            data,
                        )
                    )
                    continue
                seen[report.study_id] = member.name
                reports.append(report)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise SourceError(where, f"is not a readable tar.gz archive ({e})") from None
    if not reports:
        raise SourceError(
            where,
            "holds no report XML files"
            if not bad
            else f"holds no readable report XML: all {len(bad)} members were quarantined "
            f"(first: {bad[0]['source_file']}: {bad[0]['reason']})",
        )
    quarantine = [pl.DataFrame(bad, schema=QUARANTINE_COLUMNS) if bad else empty_quarantine()]
    return reports, quarantine


def _parse_report(data: bytes, member: str) -> ReportXml:
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise ValueError(f"not well-formed XML: {e}") from None
    uid = root.find("uId")
    study_id = (uid.get("id") or "").strip() if uid is not None else ""
    if not study_id:
        raise ValueError("no <uId id=...> element")
    sections: dict[str, str | None] = dict.fromkeys(SECTIONS.values())
    lines = []
    for element in root.iter("AbstractText"):
        label, body = element.get("Label", ""), " ".join("".join(element.itertext()).split())
        if not body:
            continue
        lines.append(f"{label}: {body}" if label else body)
        section = SECTIONS.get(label.strip().upper())
        if section:
            sections[section] = body if sections[section] is None else f"{sections[section]} {body}"
    mesh_terms = [(e.tag, (e.text or "").strip()) for e in root.findall("MeSH/*")]
    return ReportXml(
        study_id=study_id,
        member=member,
        sections=sections,
        full_text="\n".join(lines),
        image_ids=[image_id for i in root.findall("parentImage") if (image_id := i.get("id"))],
        mesh=[(method, term) for method, term in mesh_terms if term],
    )


def _bad_member(archive: str, member: str, reason: str, data: bytes | None) -> dict:
    raw = data.decode("utf-8", errors="replace") if data is not None and len(data) <= RAW_RECORD_LIMIT else None
    return {
        "target_table": "reports",
        "source_file": f"{archive}/{member}",
        "row_number": None,
        "line_number": None,
        "column_name": "",
        "value": None,
        "reason": reason,
        "raw_record": raw,
    }


def _read_metadata(src: SourceFolder, name: str) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """One row per image id with the typed header values we use, and the values that did not convert."""
    read = read_csv(
        src, name, columns=METADATA_COLUMNS, header=METADATA_HEADER, target_table="images", one_line_records=False
    )
    frame = read.frame.filter(pl.col("imageid").is_not_null())
    parsed = {
        "_birth_date": ("Patient's Birth Date", _yyyymmdd("Patient's Birth Date"), "a YYYYMMDD date"),
        "_study_date": ("Study Date", _yyyymmdd("Study Date"), "a YYYYMMDD date"),
        "_height": ("Rows", pl.col("Rows").cast(pl.Int32, strict=False), "an integer"),
        "_width": ("Columns", pl.col("Columns").cast(pl.Int32, strict=False), "an integer"),
    }
    frame = frame.with_columns(expr.alias(out) for out, (_, expr, _) in parsed.items())
    rejected = [read.rejects] + [
        quarantine_rows(
            frame.filter(pl.col(out).is_null() & pl.col(column).is_not_null()),
            target_table="images",
            source_file=src.display(name),
            column=column,
            reason=f"{column} is not {what}",
            one_line_rows=False,
        )
        for out, (column, _, what) in parsed.items()
    ]
    spacing = (
        pl.when(pl.col("Pixel Spacing").str.strip_chars() != "")
        .then(pl.col("Pixel Spacing"))
        .otherwise(pl.col("Imager Pixel Spacing"))
        .str.extract_all(r"'[^']*'")
        .list.eval(pl.element().str.strip_chars("' "))
    )  # '0.143', '1.50000006E-001', '.15e0'
    attributes = values.attributes(
        {
            ATTRIBUTE_KEYS.get(n, n): pl.col(ATTRIBUTE_KEYS.get(n, n))
            for n in values.attribute_fields(SOURCE_FIELDS[METADATA_FILE], "images")
        }
    )
    metadata = frame.select(
        pl.col("imageid").alias("_metadata_id"),
        pl.lit(True).alias("_has_header"),
        pl.col("View Position").alias("view_source"),
        pl.col("Patient's Sex").alias("sex_source"),
        pl.col("Patient's Birth Date").alias("age_source"),
        *parsed,
        spacing.list.get(0, null_on_oob=True).cast(pl.Float32, strict=False).alias("_spacing_y"),
        spacing.list.get(1, null_on_oob=True).cast(pl.Float32, strict=False).alias("_spacing_x"),
        pl.col("Patient Orientation")
        .str.extract_all(r"'([^']*)'")
        .list.eval(pl.element().str.strip_chars("'"))
        .list.join("\\")
        .alias("_orientation"),
        text.blank_to_null("Manufacturer").alias("_manufacturer"),
        pl.col("Study Time")
        .str.strip_chars()
        .str.slice(0, 6)
        .str.strptime(pl.Time, "%H%M%S", strict=False)
        .alias("_study_time"),
        attributes.alias("_attributes"),
    )
    return metadata, rejected


def _yyyymmdd(column: str) -> pl.Expr:
    return pl.col(column).str.strptime(pl.Date, "%Y%m%d", strict=False)


def _no_metadata() -> list[pl.Expr]:
    return (
        [pl.lit(None, pl.Boolean).alias("_has_header")]
        + [
            pl.lit(None, pl.String).alias(c)
            for c in ("view_source", "sex_source", "age_source", "_orientation", "_manufacturer")
        ]
        + [pl.lit(None, pl.Float32).alias(c) for c in ("_spacing_x", "_spacing_y")]
        + [
            pl.lit(None, pl.Time).alias("_study_time"),
            pl.lit(None, pl.List(pl.Struct({"key": pl.String, "value": pl.String}))).alias("_attributes"),
        ]
        + [pl.lit(None, pl.Date).alias(c) for c in ("_birth_date", "_study_date")]
        + [pl.lit(None, pl.Int32).alias(c) for c in ("_height", "_width")]
    )


def _images(reports: list[ReportXml]) -> pl.DataFrame:
    frame = pl.DataFrame(
        [(image_id, r.study_id) for r in reports for image_id in r.image_ids],
        schema={"image_id": pl.String, "study_id": pl.String},
        orient="row",
    )
    return frame.with_columns(pl.col("image_id").str.replace(SPLIT_IMAGE_ID, "${1}_${2}").alias("_metadata_id"))


def _image_table(images: pl.DataFrame) -> pl.DataFrame:
    view = values.view_position(pl.col("view_source").replace(VIEW_WORDS))
    return images.select(
        "image_id",
        "study_id",
        pl.col("study_id").alias("patient_id"),
        pl.lit("unassigned").alias("split"),
        view.alias("view_position"),
        "view_source",
        values.is_frontal(view).alias("is_frontal"),
        pl.col("_width").alias("width"),
        pl.col("_height").alias("height"),
        pl.col("_spacing_x").alias("pixel_spacing_x"),
        pl.col("_spacing_y").alias("pixel_spacing_y"),
        (pl.col("image_id") + ".png").alias("path"),
        pl.when(pl.col("_orientation") != "").then(pl.col("_orientation")).alias("patient_orientation"),
        pl.col("_attributes").alias("source_attributes"),
    )


def _per_study(reports: list[ReportXml], images: pl.DataFrame) -> pl.DataFrame:
    """Every report with the header values of its first image that has a header row (constant per report)."""
    header = (
        images.filter(pl.col("_has_header"))
        .group_by("study_id", maintain_order=True)
        .agg(
            pl.col("sex_source", "age_source", "_birth_date", "_study_date").first(),
            pl.col("_manufacturer", "_study_time").drop_nulls().first(),
        )
    )
    ids = pl.DataFrame({"study_id": [r.study_id for r in reports]}, schema={"study_id": pl.String})
    return ids.join(header, on="study_id", how="left", maintain_order="left")


def _patients(reports: list[ReportXml], images: pl.DataFrame) -> pl.DataFrame:
    return _per_study(reports, images).select(
        pl.col("study_id").alias("patient_id"),
        values.sex(pl.col("sex_source")).alias("sex"),
        "sex_source",
        pl.col("_birth_date").dt.year().cast(pl.Int16).alias("birth_year"),
    )


def _studies(reports: list[ReportXml], images: pl.DataFrame) -> pl.DataFrame:
    birth, study = pl.col("_birth_date"), pl.col("_study_date")
    had_birthday = study.dt.strftime("%m%d") >= birth.dt.strftime("%m%d")
    age = study.dt.year() - birth.dt.year() - pl.when(had_birthday).then(0).otherwise(1)
    return _per_study(reports, images).select(
        "study_id",
        pl.col("study_id").alias("patient_id"),
        pl.lit("unassigned").alias("split"),
        study.alias("study_date"),
        age.cast(pl.Float32).alias("age_years"),
        "age_source",
        pl.col("_manufacturer").alias("manufacturer"),
        pl.col("_study_time").dt.strftime("%H:%M:%S%.f").alias("study_time"),
        pl.lit(1, pl.Int32).alias("visit_order"),
    )


def _reports(reports: list[ReportXml], archive: str) -> pl.DataFrame:
    frame = pl.DataFrame(
        [
            {
                "study_id": r.study_id,
                "patient_id": r.study_id,
                **r.sections,
                "full_text": r.full_text,
                "language": "en",
                "source_file": f"{archive}/{r.member}",
            }
            for r in reports
        ],
        schema={
            "study_id": pl.String,
            "patient_id": pl.String,
            **dict.fromkeys(SECTIONS.values(), pl.String),
            "full_text": pl.String,
            "language": pl.String,
            "source_file": pl.String,
        },
    )
    return text.with_token_counts(frame)


def mesh_term(term: str) -> tuple[str, list[str] | None]:
    """(the text the finding is looked up by, the place qualifiers) of a MeSH term."""
    heading, *qualifiers = [part.strip() for part in term.split("/")]
    places = [q for q in qualifiers if q.lower() in PLACES]
    how = [q for q in qualifiers if q.lower() not in PLACES]
    key = f"{heading}/{how[0]}" if heading.lower() in ANATOMY_HEADINGS and how else heading
    return key, places or None


def _labels(reports: list[ReportXml]) -> pl.DataFrame:
    rows = []
    for report in reports:
        for method, term in report.mesh:
            key, places = mesh_term(term)
            rows.append((report.study_id, term, method, key, places))
    frame = pl.DataFrame(
        rows,
        orient="row",
        schema={
            "study_id": pl.String,
            "raw_label": pl.String,
            "method": pl.String,
            "_key": pl.String,
            "locations": pl.List(pl.String),
        },
    )
    frame = (
        frame.with_columns(pl.col("method").replace_strict(METHOD_ORDER, default=len(METHOD_ORDER)).alias("_order"))
        .sort("_order", maintain_order=True)
        .unique(["study_id", "raw_label"], keep="first", maintain_order=True)
        .with_columns(pl.lit(1, pl.Int8).alias("value"), pl.lit("mesh").alias("labeler"))
    )
    frame = findings.with_findings(frame, "mesh", raw="_key")
    return frame.select("study_id", "finding", "raw_label", "value", "labeler", "method", "locations")


ADAPTER = IuXray()
