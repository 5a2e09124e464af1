"""`croissant.json`: an MLCommons Croissant 1.0 description of a cohort's manifest, so ML tooling
(mlcroissant, TFDS, Hugging Face) can load the cohort without reading our docs.

It names the manifest file with its sha256, one record set whose fields are the manifest's columns with
their Croissant types (list columns are `repeated`), the citations (BibTeX, in `citeAs`) and the licence of
every dataset the cohort draws on. The `@context` is the one the Croissant 1.0 examples carry; mlcroissant
warns about any other.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

CONFORMS_TO = "http://mlcommons.org/croissant/1.0"
CONTEXT = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}
ENCODINGS = {".parquet": "application/x-parquet", ".csv": "text/csv", ".jsonl": "application/jsonlines"}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_type(arrow_type) -> tuple[str, bool]:
    """The Croissant data type of an Arrow type, and whether the field repeats (an Arrow list)."""
    import pyarrow as pa

    repeated = pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)
    t = arrow_type.value_type if repeated else arrow_type
    if pa.types.is_boolean(t):
        kind = "sc:Boolean"
    elif pa.types.is_integer(t):
        kind = "sc:Integer"
    elif pa.types.is_floating(t) or pa.types.is_decimal(t):
        kind = "sc:Float"
    elif pa.types.is_date(t):
        kind = "sc:Date"
    elif pa.types.is_timestamp(t):
        kind = "sc:DateTime"
    else:
        kind = "sc:Text"
    return kind, repeated


def describe(
    manifest_path: Path, schema, provenance: dict, datasets: dict[str, dict], descriptions: dict[str, str]
) -> dict:
    """The Croissant document for the manifest at `manifest_path` (its Arrow `schema`); `datasets` maps each
    dataset of the cohort to its catalog_datasets row; `descriptions` maps manifest columns to a sentence."""
    name = provenance["cohort"]
    fields = []
    for f in schema:
        kind, repeated = data_type(f.type)
        field = {
            "@type": "cr:Field",
            "@id": f"manifest/{f.name}",
            "name": f.name,
            "description": descriptions.get(f.name, f.name),
            "dataType": kind,
            "source": {"fileObject": {"@id": "manifest-file"}, "extract": {"column": f.name}},
        }
        if repeated:
            field["repeated"] = True
        fields.append(field)
    licences = []
    for d in provenance["datasets"]:
        info = datasets.get(d, {})
        licences.append(info.get("licence_url") or f"{d}: {info.get('licence') or 'unknown'}")
    terms = "; ".join(
        f"{d}: {datasets.get(d, {}).get('licence') or 'unknown'} "
        f"({datasets.get(d, {}).get('access') or 'unknown'} access)"
        for d in provenance["datasets"]
    )
    return {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": CONFORMS_TO,
        "name": name,
        "description": (
            f"{provenance['description']} One row per {provenance['unit']}; {provenance['rows']:,} rows. "
            f"Built by cxr-warehouse from: {', '.join(provenance['datasets'])}. Licence terms: {terms}."
        ),
        "url": manifest_path.name,
        "version": provenance.get("project_version") or "0",
        "datePublished": provenance["run_at"][:10],
        "license": licences,
        "citeAs": "\n".join(
            datasets.get(d, {}).get("bibtex") or datasets.get(d, {}).get("citation") or d
            for d in provenance["datasets"]
        ),
        "isBasedOn": [
            {
                "@type": "sc:Dataset",
                "name": datasets.get(d, {}).get("name") or d,
                "url": datasets.get(d, {}).get("homepage") or "",
                "license": datasets.get(d, {}).get("licence_url") or datasets.get(d, {}).get("licence") or "unknown",
                "citeAs": datasets.get(d, {}).get("citation") or "",
            }
            for d in provenance["datasets"]
        ],
        "distribution": [
            {
                "@type": "cr:FileObject",
                "@id": "manifest-file",
                "name": manifest_path.name,
                "contentUrl": manifest_path.name,
                "encodingFormat": ENCODINGS[manifest_path.suffix],
                "sha256": sha256(manifest_path),
                "contentSize": f"{manifest_path.stat().st_size} B",
            }
        ],
        "recordSet": [
            {
                "@type": "cr:RecordSet",
                "@id": "manifest",
                "name": "manifest",
                "description": f"The cohort's {provenance['unit']}s.",
                "field": fields,
            }
        ],
    }


def write(path: Path, document: dict) -> Path:
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path
