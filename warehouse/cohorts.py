"""Cohorts as a product: a cohort is a plain SQL file in sql/cohorts/, run into a manifest, an attrition
table and a provenance record.

The file format (every line a SQL comment but the rule predicates, so the file stays readable SQL):

    -- name: frontal_pneumothorax
    -- description: Frontal images positive for pneumothorax, in every dataset that labels it.
    -- unit: image                                   image | study | patient
    -- datasets: nih_cxr14, chexpert                 optional: read only these datasets (default: all)
    -- findings: $finding                            optional: findings pivoted into the manifest (names,
                                                     or `$param`s of type FINDING or FINDING[])
    -- uncertain: ignore                             optional: ignore | zeros | ones (default ignore)
    -- split: split                                  optional: a SQL expression giving each unit's split
    -- param: finding FINDING = 'pneumothorax'  -- the finding to select
    -- rule: labelled
    labels[$finding] IS NOT NULL
    -- rule: frontal
    is_frontal

A `-- param:` line gives a name, a type and a default (`NULL` for none), then an optional `-- doc`.
Types: INTEGER, DOUBLE, VARCHAR, BOOLEAN, DATE, or a closed vocabulary (FINDING, VIEW_POSITION, SEX,
SPLIT, LABELER, DATASET), each also as a list (`FINDING[]`). A rule's SQL is one boolean predicate over
the unit's base relation, aliased `u` (it may use `$param`s and subqueries over the catalog, e.g.
`EXISTS (SELECT 1 FROM qa_questions q WHERE q.study_id = u.study_id)`); a NULL predicate counts as false.
Rules apply in order; the attrition table counts what is kept after each.

The base relation (`base_sql`), one row per unit, after linked datasets are folded together (MIMIC-CXR and
MIMIC-Ext-CXR-QBA, CheXpert and CheXpert Plus share ids: an image, study or patient appears once, as the
row of the dataset the other links to, and `also_in` lists the other datasets that hold it or label it):

  image:   dataset, also_in, patient_id, study_id, image_id, split, view_position, is_frontal, sex,
           age_years, age_bucket, study_date, visit_order, days_since_previous, path, labels
  study:   dataset, also_in, patient_id, study_id, split, sex, age_years, age_bucket, study_date,
           visit_order, days_since_previous, n_images, n_frontal, image_ids, view_positions, paths, labels
  patient: dataset, also_in, patient_id, sex, age_years (at the first study), age_bucket, first_study_date,
           last_study_date, n_studies, n_images, n_frontal, splits, split (NULL when several), study_ids,
           image_ids, paths, labels

`labels` is a MAP(finding -> value): 1 positive, 0 negative, -1 uncertain, for each finding as the labels
store it (the most specific one: `labels['lung_opacity']` is a lung opacity label itself, not its children's;
to ask for a finding and everything under it, list them: `list_has_any(map_keys(labels), [...])` with the
ids from finding_hierarchy or warehouse.findings.descendants()), one value per finding chosen by labeler
precedence (LABELER_PRECEDENCE: radiologist over the NLP labelers), then within a labeler positive over
uncertain over negative (so a study or patient is positive when any of its images is). Rules see these
values as they are; the uncertainty policy only recodes the manifest's finding columns:
ignore (U-Ignore: -1 -> NULL), zeros (U-Zeros: -1 -> 0), ones (U-Ones: -1 -> 1). An unmentioned
finding is NULL under every policy.

A run is one query (`Cohort.run_sql`): every rule's boolean per unit as a bitmask, the attrition counts over
all units, and only the manifest's rows returned. When every use of `labels` in the rules and the split is a
lookup of a named finding (`labels['edema']`, `labels[$finding]`), the map holds only those findings and the
pivoted ones; a rule that reads `labels` otherwise (`map_keys(labels)`) gets every finding.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CxrError
from .queries import SQL_ROOT

if TYPE_CHECKING:
    import pyarrow as pa

    from .api import Warehouse

COHORT_ROOT = SQL_ROOT / "cohorts"
UNITS = ("image", "study", "patient")
PLURAL = {"image": "images", "study": "studies", "patient": "patients"}
POLICIES = ("ignore", "zeros", "ones")
MANIFEST_FORMATS = ("parquet", "csv", "jsonl")

# Which labeler's value a finding takes when several label the same unit: first in this list wins.
# A radiologist's read over any NLP labeler; the CheXpert labeler over its successors and the rest.
LABELER_PRECEDENCE: tuple[str, ...] = (
    "radiologist",
    "chexpert",
    "chexbert",
    "negbio",
    "nih_nlp",
    "padchest",
    "mesh",
    "qba_scene_graph",
)
# The policies as SQL over a value v (CheXpert's U-Ignore, U-Zeros and U-Ones).
_RECODE = {
    "ignore": "CASE WHEN {v} = -1 THEN NULL ELSE {v} END",
    "zeros": "CASE WHEN {v} = -1 THEN 0 ELSE {v} END",
    "ones": "CASE WHEN {v} = -1 THEN 1 ELSE {v} END",
}
AGE_BUCKET_SQL = (
    "CASE WHEN {a} IS NULL THEN 'unknown' WHEN {a} < 20 THEN '0-20' WHEN {a} < 40 THEN '20-40' "
    "WHEN {a} < 60 THEN '40-60' WHEN {a} < 80 THEN '60-80' ELSE '80+' END"
)


class CohortError(CxrError):
    """A cohort file, a parameter or a run that cannot go on; the message says what to change."""


# --- vocabularies ------------------------------------------------------------------------------------
def vocabularies() -> dict[str, tuple[str, ...]]:
    """Closed vocabularies by the column names that hold them."""
    from . import schema
    from .sources import DATASETS

    found = _finding_ids()
    return {
        "finding": found,
        "ancestor": found,
        "descendant": found,
        "view_position": schema.VIEW_POSITIONS,
        "sex": schema.SEX,
        "split": schema.SPLITS,
        "labeler": schema.LABELERS,
        "dataset": DATASETS,
    }


@lru_cache(maxsize=1)
def _finding_ids() -> tuple[str, ...]:
    """The findings vocabulary's ids, read with the csv module (warehouse.findings would import polars,
    which the query path never does)."""
    from importlib import resources

    text = resources.files("warehouse.vocab").joinpath("findings.csv").read_text()
    return tuple(sorted(row["finding"] for row in csv.DictReader(text.splitlines())))


_VOCAB_COLUMNS = ("finding", "ancestor", "descendant", "view_position", "sex", "split", "labeler", "dataset")
_MAYBE = re.compile(
    r"\b(?:"
    + "|".join(_VOCAB_COLUMNS)
    + r")\b\s*(?:=|<>|!=|\bIN\b)|=\s*\w*\.?\b(?:"
    + "|".join(_VOCAB_COLUMNS)
    + r")\b|\blabels\s*\[",
    re.IGNORECASE,
)


_HINTS = {
    ("view_position", "frontal"): ("PA", "AP", "AP_SUPINE"),
    ("view_position", "lateral"): ("LATERAL", "LL", "RL"),
}


def closest(column: str, value: str, n: int = 3) -> list[str]:
    """The valid values nearest to `value` (difflib, case-insensitive; a hint for words like 'frontal')."""
    allowed = vocabularies()[column]
    hint = _HINTS.get((column, str(value).lower()))
    if hint:
        return list(hint)
    lower = {v.lower(): v for v in allowed}
    near = difflib.get_close_matches(str(value).lower(), list(lower), n=n, cutoff=0.5)
    if not near:
        near = sorted(lower, key=lambda v: -difflib.SequenceMatcher(None, str(value).lower(), v).ratio())[:n]
    return [lower[v] for v in near]


def vocabulary_problem(column: str, value) -> str | None:
    """None when `value` is in the column's vocabulary, else a sentence naming the closest valid values."""
    vocab = vocabularies().get(column)
    if vocab is None or value is None or str(value) in vocab:
        return None
    extra = " (or use is_frontal)" if (column, str(value).lower()) == ("view_position", "frontal") else ""
    return f"{value!r} is not a valid {column}; closest valid values: {', '.join(closest(column, value))}{extra}"


def literal_problems(sql: str, params: dict | None = None) -> list[str]:
    """Comparisons of a closed-vocabulary column with a value outside its vocabulary, found in DuckDB's own
    parse of the query (warehouse.sqltree): `col = 'x'`, `'x' = col`, `col <> 'x'`, `col IN ('x', …)`, the
    same with `$param`s (given `params`), and `labels['x']` map lookups (a finding). SQL that DuckDB cannot
    parse, or that is not only SELECTs, yields no problems."""
    if not _MAYBE.search(sql):
        return []  # no comparison with a vocabulary column: skip the parser
    from . import sqltree

    vocab = _VOCAB_COLUMNS
    params = params or {}
    problems: list[str] = []

    def values(node: dict) -> list:
        text = sqltree.string_value(node)
        if text is not None:
            return [text]
        name = sqltree.parameter_name(node)
        if name is not None:
            value = params.get(name)
            return list(value) if isinstance(value, (list, tuple)) else ([] if value is None else [value])
        items = sqltree.list_items(node)
        return [v for item in items for v in values(item)] if items is not None else []

    def check(column: str, nodes) -> None:
        for node in nodes:
            for value in values(node):
                problem = vocabulary_problem(column, value)
                if problem and problem not in problems:
                    problems.append(problem)

    def vocab_column(node: dict) -> str | None:
        name = sqltree.column_name(node)  # lower case
        return name if name in vocab else None

    for tree in sqltree.statements(sql):
        for node, _ in sqltree.walk(tree):
            kind = node.get("type")
            if kind in ("COMPARE_EQUAL", "COMPARE_NOTEQUAL"):
                for col, other in ((node["left"], node["right"]), (node["right"], node["left"])):
                    if column := vocab_column(col):
                        check(column, [other])
            elif kind in ("COMPARE_IN", "COMPARE_NOT_IN"):
                first, *rest = sqltree.operands(node)
                if column := vocab_column(first):
                    check(column, rest)
            elif kind == "ARRAY_EXTRACT":
                first, *rest = sqltree.operands(node)
                if sqltree.column_name(first) == "labels":
                    check("finding", rest)
            elif (found := sqltree.contained(node)) and (column := vocab_column(found[1])):
                check(column, [found[0]])  # `col IN ['a', 'b']` and `col IN $list`
    return problems


# --- the definition -----------------------------------------------------------------------------------
_SCALAR_TYPES: dict[str, Callable[[str], object]] = {
    "INTEGER": int,
    "BIGINT": int,
    "DOUBLE": float,
    "FLOAT": float,
    "VARCHAR": str,
    "BOOLEAN": bool,
    "DATE": date.fromisoformat,
}
_VOCAB_TYPES = {
    "FINDING": "finding",
    "VIEW_POSITION": "view_position",
    "SEX": "sex",
    "SPLIT": "split",
    "LABELER": "labeler",
    "DATASET": "dataset",
}
_HEADER_KEYS = ("name", "description", "unit", "datasets", "findings", "uncertain", "split", "param", "rule")
_PARAM = re.compile(r"^(\w+)\s+([A-Za-z_]+(?:\[\])?)\s*(?:=\s*(.*?))?\s*(?:--\s*(.*))?$")


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: object
    doc: str = ""

    @property
    def is_list(self) -> bool:
        return self.type.endswith("[]")

    @property
    def base_type(self) -> str:
        return self.type.removesuffix("[]")

    def convert(self, text) -> object:
        """A value from text (a command-line `k=v`, a header default) or a Python value, checked."""
        if isinstance(text, str):
            text = text.strip()
            if text.upper() == "NULL" or text == "":
                return None
            if self.is_list:
                items = [t.strip() for t in text.strip("[]").split(",") if t.strip()]
                return [self._one(t) for t in items]
            return self._one(text)
        if self.is_list and text is not None:
            return [self._one(t) for t in text]
        return None if text is None else self._one(text)

    def _one(self, value):
        if isinstance(value, str):
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == "'":
                value = value[1:-1].replace("''", "'")
        kind = self.base_type
        if kind in _VOCAB_TYPES:
            problem = vocabulary_problem(_VOCAB_TYPES[kind], value)
            if problem:
                raise CohortError(f"parameter {self.name}: {problem}")
            return str(value)
        if kind == "BOOLEAN" and isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0"):
                raise CohortError(f"parameter {self.name} is BOOLEAN: true or false, not {value!r}")
            return value.lower() in ("true", "1")
        try:
            return _SCALAR_TYPES[kind](value) if not isinstance(value, date) else value
        except (KeyError, ValueError, TypeError):
            raise CohortError(f"parameter {self.name} is {self.type}: cannot read {value!r}") from None


@dataclass(frozen=True)
class Rule:
    name: str
    sql: str
    doc: str = ""


@dataclass(frozen=True)
class Cohort:
    name: str
    description: str
    unit: str
    rules: tuple[Rule, ...]
    params: tuple[Param, ...] = ()
    findings: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    uncertain: str = "ignore"
    split: str = "split"
    text: str = ""
    path: Path | None = None

    # -- loading
    @classmethod
    def load(cls, name_or_path: str | Path) -> "Cohort":
        """A cohort by name (sql/cohorts/<name>.sql) or from a file path."""
        path = Path(name_or_path)
        if path.suffix == ".sql" and path.exists():
            return cls.parse(path.read_text(), path)
        packaged = COHORT_ROOT / f"{name_or_path}.sql"  # a Traversable: a wheel's copy need not be plain files
        if not packaged.is_file():
            known = _cohort_names()
            near = difflib.get_close_matches(str(name_or_path), known, n=1)
            raise CohortError(
                f"no cohort {str(name_or_path)!r}{f' (did you mean {near[0]}?)' if near else ''}; "
                f"known: {', '.join(known)} (or give a .sql file)"
            )
        return cls.parse(packaged.read_text(), Path(str(packaged)))

    @classmethod
    def parse(cls, text: str, path: Path | None = None) -> "Cohort":
        where = path or "cohort"
        fields: dict[str, str] = {}
        params: list[Param] = []
        rules: list[list] = []  # [name, doc, sql lines]
        last = None
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            m = re.match(r"^--\s*(\w+)\s*:\s*(.*)$", stripped)
            key = m.group(1).lower() if m else None
            if m is not None and key in _HEADER_KEYS:
                value = m.group(2).strip()
                if rules and key != "rule":
                    raise CohortError(f"{where}, line {number}: header lines come before the first rule")
                if key == "param":
                    pm = _PARAM.match(value)
                    if not pm:
                        raise CohortError(
                            f"{where}, line {number}: write a parameter as `-- param: name TYPE = default  -- doc`"
                        )
                    pname, ptype, pdefault, pdoc = pm.groups()
                    ptype = ptype.upper()
                    if ptype.removesuffix("[]") not in {**_SCALAR_TYPES, **_VOCAB_TYPES}:
                        raise CohortError(
                            f"{where}, line {number}: unknown parameter type {ptype}; known: "
                            f"{', '.join([*_SCALAR_TYPES, *_VOCAB_TYPES])} (each also as TYPE[])"
                        )
                    p = Param(pname, ptype, None, (pdoc or "").strip())
                    params.append(Param(pname, ptype, p.convert(pdefault or "NULL"), p.doc))
                elif key == "rule":
                    rname, _, rdoc = value.partition("--")
                    rules.append([rname.strip(), rdoc.strip(), []])
                else:
                    fields[key] = value
                last = key
                continue
            if stripped.startswith("--"):
                if not rules and last == "description" and stripped[2:].strip():
                    fields["description"] += " " + stripped[2:].strip()
                continue  # any other comment, in the header or inside a rule
            if not stripped:
                last = None if not rules else last
                continue
            if not rules:
                raise CohortError(f"{where}, line {number}: SQL before the first `-- rule:` line")
            rules[-1][2].append(line)
        unit = fields.get("unit", "").lower()
        if unit not in UNITS:
            raise CohortError(f"{where}: `-- unit:` must be one of {', '.join(UNITS)}, not {unit!r}")
        if not rules:
            raise CohortError(f"{where}: a cohort needs at least one `-- rule: name` followed by a predicate")
        parsed = []
        for rname, rdoc, lines in rules:
            sql = "\n".join(lines).strip().rstrip(";").strip()
            if not re.fullmatch(r"\w+", rname) or not sql:
                raise CohortError(f"{where}: rule {rname!r} needs a one-word name and a predicate after it")
            parsed.append(Rule(rname, sql, rdoc))
        if len(parsed) > 62:
            raise CohortError(f"{where}: at most 62 rules (each is one bit of a BIGINT mask)")
        if len({r.name for r in parsed}) != len(parsed):
            raise CohortError(f"{where}: two rules share a name")
        policy = fields.get("uncertain", "ignore").lower()
        if policy not in POLICIES:
            raise CohortError(f"{where}: `-- uncertain:` must be one of {', '.join(POLICIES)}, not {policy!r}")
        cohort = cls(
            name=fields.get("name") or (path.stem if path else "cohort"),
            description=fields.get("description", ""),
            unit=unit,
            rules=tuple(parsed),
            params=tuple(params),
            findings=_words(fields.get("findings", "")),
            datasets=_words(fields.get("datasets", "")),
            uncertain=policy,
            split=fields.get("split") or "split",
            text=text,
            path=path,
        )
        cohort.check_names(
            [f for f in cohort.findings if not f.startswith("$")], {p.name: p.default for p in params}, where=str(where)
        )
        return cohort

    # -- checks
    def resolve(self, given: dict[str, object] | None = None) -> dict[str, object]:
        """Defaults overridden by `given` (text from the command line, or Python values), each checked."""
        given = dict(given or {})
        known = {p.name: p for p in self.params}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise CohortError(
                f"cohort {self.name} has no parameter {', '.join(unknown)}; "
                f"its parameters: {', '.join(known) or 'none'}"
            )
        return {name: (p.convert(given[name]) if name in given else p.default) for name, p in known.items()}

    def check_names(self, findings, params: dict, *, where: str | None = None) -> None:
        """Findings, datasets and every vocabulary literal or parameter compared in the rules and split."""
        problems = []
        for f in findings:
            if problem := vocabulary_problem("finding", f):
                problems.append(f"finding: {problem}")
        for d in self.datasets:
            if problem := vocabulary_problem("dataset", d):
                problems.append(f"datasets: {problem}")
        for rule in self.rules:
            problems += [f"rule {rule.name}: {p}" for p in literal_problems(f"SELECT 1 WHERE {rule.sql}", params)]
        problems += [f"split: {p}" for p in literal_problems(f"SELECT {self.split}", params)]
        if problems:
            raise CohortError(f"{where or self.name}: " + "; ".join(problems))

    def label_findings(self, values: dict, chosen) -> tuple[str, ...] | None:
        """The findings the rules and split can read: every `labels[...]` key (a literal or a `$param`), plus
        the pivoted ones; None when some rule uses `labels` otherwise (`map_keys(labels)`), so every label is
        needed. A run then maps only these labels per unit, instead of all of them (most of a run's time)."""
        from . import sqltree

        keys: set[str] = {str(f) for f in chosen}
        for text in [*(r.sql for r in self.rules), self.split]:
            trees = sqltree.statements(f"SELECT 1 WHERE {text}")
            if not trees:
                return None
            for tree in trees:
                for node, parent in sqltree.walk(tree):
                    if node.get("class") == "STAR" or sqltree.names_a_field_of(node, "labels"):
                        return None  # COLUMNS(...), *, or labels.edema: it may read any label
                    if sqltree.column_name(node) != "labels":
                        continue
                    lookup = sqltree.operands(parent) if parent and parent.get("type") == "ARRAY_EXTRACT" else []
                    if len(lookup) != 2 or lookup[0] is not node:
                        return None  # `labels` read otherwise than labels[key]: every label is needed
                    key = lookup[1]
                    literal, name = sqltree.string_value(key), sqltree.parameter_name(key)
                    if literal is not None:
                        keys.add(literal)
                    elif name is not None and isinstance(values.get(name), str):
                        keys.add(values[name])
                    else:
                        return None
        return tuple(sorted(keys))

    # -- SQL
    def _mask(self) -> str:
        return " + ".join(
            f"(CASE WHEN coalesce(({r.sql}), false) THEN {1 << i} ELSE 0 END)::BIGINT" for i, r in enumerate(self.rules)
        )

    def _counts_ctes(self, source: str) -> str:
        """CTEs ending in `counts`, the attrition over every unit of `source`: all units (_c0 images, _c1
        studies, _c2 patients), then per rule the units meeting it and every rule before it, and the units
        only it removes.

        A unit's `lvl` is how many leading rules it meets, so "kept after rule k" is `lvl >= k`, and a study
        or patient is kept while its best unit is: one GROUP BY per key instead of a DISTINCT count per rule
        (those were most of a run's query time)."""
        n = len(self.rules)
        full = (1 << n) - 1
        prefixes = [(k, (1 << k) - 1) for k in range(1, n + 1)]
        lvl = "CASE " + " ".join(f"WHEN mask & {p} = {p} THEN {k}" for k, p in reversed(prefixes)) + " ELSE 0 END"
        images = "1" if self.unit == "image" else "n_images"
        extra = {"image": "", "study": "n_images, ", "patient": "n_images, n_studies, "}[self.unit]
        levels = range(n + 1)
        per_unit = [f"coalesce(sum({images}) FILTER (WHERE lvl >= {k}), 0) AS i{k}" for k in levels]
        per_unit += [f"count(*) FILTER (WHERE mask = {full & ~(1 << (k - 1))}) AS a{k}" for k in levels if k]
        if self.unit == "patient":  # a patient unit carries its study count
            per_unit += [f"coalesce(sum(n_studies) FILTER (WHERE lvl >= {k}), 0) AS s{k}" for k in levels]

        def kept(prefix: str, key: str) -> str:
            cols = ", ".join(f"count(*) FILTER (WHERE l >= {k}) AS {prefix}{k}" for k in levels)
            return f"SELECT {cols} FROM (SELECT max(lvl) AS l FROM masked GROUP BY dataset, {key})"

        ctes = [
            f"masked AS (SELECT dataset, patient_id, {'' if self.unit == 'patient' else 'study_id, '}{extra}"
            f"mask, {lvl} AS lvl FROM {source})",
            f"per_unit AS (SELECT {', '.join(per_unit)} FROM masked)",
            f"per_patient AS ({kept('p', 'patient_id')})",
        ]
        sources = "per_unit, per_patient"
        if self.unit != "patient":
            ctes.append(f"per_study AS ({kept('s', 'study_id')})")
            sources += ", per_study"
        order = ["i0", "s0", "p0"] + [c for k in range(1, n + 1) for c in (f"i{k}", f"s{k}", f"p{k}", f"a{k}")]
        named = ", ".join(f"CAST({c} AS BIGINT) AS _c{i}" for i, c in enumerate(order))
        return ",\n".join(ctes) + f",\ncounts AS (SELECT {named} FROM {sources})"

    def units_sql(
        self,
        findings,
        policy: str,
        image_roots: dict[str, str],
        linked: tuple[str, ...] = ("chexpert_plus", "mimic_qba"),
        label_findings: tuple[str, ...] | None = None,
    ) -> str:
        """Every unit with its manifest columns and `mask`, every rule's boolean (bit i for rule i); the
        manifest is the units whose mask has every bit. `label_findings` limits the labels mapped per unit."""
        pivots = "".join(f", {_RECODE[policy].format(v=_label_of(f))} AS \"{_pivot_name(f)}\"" for f in findings)
        if self.unit == "image":
            ids = "image_id, view_position, is_frontal, path, " + _absolute("path", image_roots) + " AS absolute_path"
        elif self.unit == "study":
            ids = (
                "n_images, n_frontal, image_ids, view_positions, paths, "
                f"list_transform(paths, lambda p: {_absolute('p', image_roots)}) AS absolute_paths"
            )
        else:
            ids = (
                "n_studies, n_images, n_frontal, study_ids, image_ids, splits, paths, "
                f"list_transform(paths, lambda p: {_absolute('p', image_roots)}) AS absolute_paths"
            )
        study = "" if self.unit == "patient" else "study_id, "
        return (
            f"WITH {base_ctes(self.unit, self.datasets, linked, label_findings)}, ruled AS (\n"
            f"  SELECT u.*, {self._mask()} AS mask, ({self.split}) AS _split FROM base u\n)\n"
            f"SELECT dataset, also_in, patient_id, {study}_split AS split, split AS official_split, sex, "
            f"age_years, {ids}{pivots}, mask\nFROM ruled\n"
            f"ORDER BY dataset, patient_id{', study_id' if study else ''}{', image_id' if self.unit == 'image' else ''}"
        )

    def run_sql(
        self,
        findings,
        policy: str,
        image_roots: dict[str, str],
        linked: tuple[str, ...] = ("chexpert_plus", "mimic_qba"),
        label_findings: tuple[str, ...] | None = None,
    ) -> str:
        """The one scan a run reads: the attrition counts over every unit (columns _c0, _c1, …) beside each
        manifest row, in manifest order, or one row of counts with `_unit` NULL when no unit passes. Only the
        manifest's rows leave DuckDB, and only they are sorted."""
        units = self.units_sql(findings, policy, image_roots, linked, label_findings)
        body, _, order = units.rpartition("\nORDER BY ")
        full = (1 << len(self.rules)) - 1
        return (
            f"WITH units AS MATERIALIZED (\n{body}\n), {self._counts_ctes('units')}\n"
            f"SELECT counts.*, m.* FROM counts LEFT JOIN (SELECT true AS _unit, * EXCLUDE (mask) FROM units "
            f"WHERE mask = {full}) m ON true\nORDER BY {order}"
        )

    # -- running
    def run(
        self,
        warehouse: "Warehouse",
        params: dict | None = None,
        out_dir: Path | str | None = None,
        *,
        findings: list[str] | None = None,
        uncertain: str | None = None,
        split: str = "official",
        seed: int = 0,
        allow_leakage: bool = False,
        fmt: str = "parquet",
        say: Callable[[str], None] = lambda m: None,
    ) -> "CohortRun":
        return run_cohort(
            self,
            warehouse,
            params,
            out_dir,
            findings=findings,
            uncertain=uncertain,
            split=split,
            seed=seed,
            allow_leakage=allow_leakage,
            fmt=fmt,
            say=say,
        )


def _label_of(finding: str) -> str:
    """The labels-map lookup of a finding name, or of a `$param` (the catalog's macros pivot by parameter)."""
    return f"labels[{finding}]" if finding.startswith("$") else f"labels[{_lit(finding)}]"


def _pivot_name(finding: str) -> str:
    return finding[1:] + "_value" if finding.startswith("$") else finding


def _words(text: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in text.split(",") if w.strip())


def _lit(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def _absolute(path_sql: str, roots: dict[str, str]) -> str:
    if not roots:
        return "CAST(NULL AS VARCHAR)"
    cases = " ".join(f"WHEN {_lit(d)} THEN {_lit(r.rstrip('/') + '/')} || {path_sql}" for d, r in sorted(roots.items()))
    return f"CASE dataset {cases} END"


def _cohort_names() -> list[str]:
    return sorted(f.name.removesuffix(".sql") for f in COHORT_ROOT.iterdir() if f.name.endswith(".sql"))


def list_cohorts() -> list[Cohort]:
    return [Cohort.load(name) for name in _cohort_names()]


# --- the base relation ---------------------------------------------------------------------------------
# The image unit over every dataset (the linked datasets folded, sex and age joined) does not depend on the
# cohort: the catalog builds it once per publish as this table, and an unscoped cohort reads it instead of
# folding some 600,000 images on every run. A cohort with `-- datasets:` folds its own scope (the fold
# depends on which datasets are in it).
IMAGE_UNITS_TABLE = "cohort_images"


def _family_cte(datasets: tuple[str, ...]) -> str:
    """`fam`: each dataset in scope (all when none is named) and the family it folds into."""
    scope = f" WHERE dataset IN ({', '.join(_lit(d) for d in datasets)})" if datasets else ""
    return f"fam AS (\n  SELECT dataset, coalesce(links_to, dataset) AS family FROM catalog_datasets{scope}\n)"


def image_units_ctes(datasets: tuple[str, ...] = (), linked: tuple[str, ...] = ("chexpert_plus", "mimic_qba")) -> str:
    """CTEs ending in `unit_img`: one row per image of the datasets in scope, linked datasets folded.

    `linked` are the datasets that link to another (catalog_datasets.links_to): only their labels can name
    an image their own images table lacks, so only their image_labels partitions are read for `also_in`."""
    linked_sql = ", ".join(_lit(d) for d in linked) or "NULL"
    return f"""{_family_cte(datasets)}, multi AS (
  -- families with more than one dataset in scope: only their rows can repeat an image, study or patient
  SELECT family FROM fam GROUP BY family HAVING count(*) > 1
), img_all AS (
  SELECT f.family, i.dataset, i.image_id, i.study_id, i.patient_id, i.split, i.view_position, i.is_frontal, i.path
  FROM images i JOIN fam f ON f.dataset = i.dataset
), holders AS (
  SELECT family, image_id, dataset FROM img_all WHERE family IN (SELECT family FROM multi)
  UNION
  SELECT f.family, l.image_id, l.dataset
  FROM (SELECT DISTINCT dataset, image_id FROM image_labels WHERE dataset IN ({linked_sql})) l
  JOIN fam f ON f.dataset = l.dataset WHERE f.family IN (SELECT family FROM multi)
), img AS (
  -- the family's own image, else the first linked dataset's copy
  SELECT * FROM img_all WHERE dataset = family OR family NOT IN (SELECT family FROM multi)
  UNION ALL
  SELECT * FROM img_all o
  WHERE o.dataset <> o.family AND o.family IN (SELECT family FROM multi)
    AND NOT EXISTS (SELECT 1 FROM img_all i WHERE i.dataset = i.family AND i.family = o.family
                    AND i.image_id = o.image_id)
  QUALIFY row_number() OVER (PARTITION BY family, image_id ORDER BY dataset) = 1
), std AS (
  SELECT f.family, s.study_id, s.age_years, s.study_date, s.visit_order, s.days_since_previous
  FROM studies s JOIN fam f ON f.dataset = s.dataset WHERE f.family NOT IN (SELECT family FROM multi)
  UNION ALL
  -- the visit columns of the family's own study (MIMIC-CXR's, not QBA's copy) when it has them
  SELECT f.family, s.study_id, s.age_years, s.study_date,
         coalesce(max(s.visit_order) FILTER (WHERE s.dataset = f.family) OVER fs, max(s.visit_order) OVER fs)
           AS visit_order,
         coalesce(max(s.days_since_previous) FILTER (WHERE s.dataset = f.family) OVER fs,
                  max(s.days_since_previous) OVER fs) AS days_since_previous
  FROM studies s JOIN fam f ON f.dataset = s.dataset WHERE f.family IN (SELECT family FROM multi)
  WINDOW fs AS (PARTITION BY f.family, s.study_id)
  QUALIFY row_number() OVER (PARTITION BY f.family, s.study_id
                             ORDER BY s.age_years IS NOT NULL DESC, s.dataset = f.family DESC, s.dataset) = 1
), pat AS (
  SELECT f.family, p.patient_id, p.sex FROM patients p JOIN fam f ON f.dataset = p.dataset
  WHERE f.family NOT IN (SELECT family FROM multi)
  UNION ALL
  SELECT f.family, p.patient_id, p.sex FROM patients p JOIN fam f ON f.dataset = p.dataset
  WHERE f.family IN (SELECT family FROM multi)
  QUALIFY row_number() OVER (PARTITION BY f.family, p.patient_id
                             ORDER BY p.sex <> 'U' DESC, p.dataset = f.family DESC, p.dataset) = 1
), also AS (
  SELECT h.family, h.image_id, list_sort(list(h.dataset)) AS datasets FROM holders h GROUP BY ALL
), unit_img AS (
  SELECT i.family, i.dataset, coalesce(list_filter(a.datasets, lambda d: d <> i.dataset), []) AS also_in,
         i.patient_id, i.study_id, i.image_id, i.split, i.view_position, i.is_frontal,
         coalesce(p.sex, 'U') AS sex, s.age_years, s.study_date, s.visit_order, s.days_since_previous, i.path
  FROM img i
  LEFT JOIN also a ON a.family = i.family AND a.image_id = i.image_id
  LEFT JOIN std s ON s.family = i.family AND s.study_id = i.study_id
  LEFT JOIN pat p ON p.family = i.family AND p.patient_id = i.patient_id
)"""


def image_units_sql(linked: tuple[str, ...]) -> str:
    """The catalog's IMAGE_UNITS_TABLE: every image of the warehouse as an unscoped cohort's image unit."""
    return f"WITH {image_units_ctes((), linked)} SELECT * FROM unit_img"


def base_ctes(
    unit: str,
    datasets: tuple[str, ...] = (),
    linked: tuple[str, ...] = ("chexpert_plus", "mimic_qba"),
    label_findings: tuple[str, ...] | None = None,
    *,
    folded: bool = True,
) -> str:
    """CTEs ending in `base`: one row per unit, linked datasets folded (see the module docstring).

    Unscoped (`datasets` empty), the image unit is the catalog's IMAGE_UNITS_TABLE unless `folded` is False
    (then it is folded here, as when the catalog builds that table). `label_findings`, when given, are the
    only findings put in each unit's `labels` map."""
    only = (
        f" AND l.finding IN ({', '.join(_lit(f) for f in label_findings) or 'NULL'})"
        if label_findings is not None
        else ""
    )
    rank = "list_position([" + ", ".join(_lit(x) for x in LABELER_PRECEDENCE) + "], l.labeler)"
    # within the labeler: positive (1) before uncertain (-1) before negative (0)
    order = f"coalesce({rank}, 99) * 10 + CASE l.value WHEN 1 THEN 0 WHEN -1 THEN 1 ELSE 2 END"
    if datasets or not folded:
        ctes = image_units_ctes(datasets, linked)
    else:
        ctes = f"{_family_cte(())}, unit_img AS (\n  SELECT * FROM {IMAGE_UNITS_TABLE}\n)"
    ctes += f""", lab AS (
  SELECT f.family, l.image_id, l.finding, l.value, {order} AS pick
  FROM image_labels l JOIN fam f ON f.dataset = l.dataset WHERE l.finding IS NOT NULL{only}
)"""
    key = {"image": "image_id", "study": "study_id", "patient": "patient_id"}[unit]
    source = "lab l" if unit == "image" else "lab l JOIN unit_img i ON i.family = l.family AND i.image_id = l.image_id"
    ctes += f""", lab_unit AS (
  SELECT l.family, {'l' if unit == 'image' else 'i'}.{key}, l.finding, arg_min(l.value, l.pick) AS value
  FROM {source}
  GROUP BY ALL
), labels_of AS (
  SELECT family, {key}, map(list(finding ORDER BY finding), list(value ORDER BY finding)) AS labels
  FROM lab_unit GROUP BY ALL
)"""
    empty = "CAST(MAP([], []) AS MAP(VARCHAR, TINYINT))"
    age_bucket = AGE_BUCKET_SQL.format(a="age_years")
    if unit == "image":
        body = f"""SELECT i.dataset, i.also_in, i.patient_id, i.study_id, i.image_id, i.split, i.view_position,
         i.is_frontal, i.sex, i.age_years, {AGE_BUCKET_SQL.format(a='i.age_years')} AS age_bucket, i.study_date,
         i.visit_order, i.days_since_previous,
         i.path, coalesce(l.labels, {empty}) AS labels
  FROM unit_img i LEFT JOIN labels_of l ON l.family = i.family AND l.image_id = i.image_id"""
    elif unit == "study":
        body = f"""SELECT s.*, {age_bucket.replace('age_years', 's.age_years')} AS age_bucket, coalesce(l.labels, {empty}) AS labels
  FROM (
    SELECT family, min(dataset) AS dataset, list_sort(list_distinct(flatten(list(also_in)))) AS also_in,
           any_value(patient_id) AS patient_id, study_id, min(split) AS split, any_value(sex) AS sex,
           any_value(age_years) AS age_years, any_value(study_date) AS study_date,
           any_value(visit_order) AS visit_order, any_value(days_since_previous) AS days_since_previous,
           count(*) AS n_images,
           count(*) FILTER (WHERE is_frontal) AS n_frontal, list(image_id ORDER BY image_id) AS image_ids,
           list(view_position ORDER BY image_id) AS view_positions, list(path ORDER BY image_id) AS paths
    FROM unit_img GROUP BY family, study_id
  ) s LEFT JOIN labels_of l ON l.family = s.family AND l.study_id = s.study_id"""
    else:
        body = f"""SELECT s.*, CASE WHEN len(s.splits) = 1 THEN s.splits[1] END AS split,
         {age_bucket.replace('age_years', 's.age_years')} AS age_bucket, coalesce(l.labels, {empty}) AS labels
  FROM (
    SELECT family, min(dataset) AS dataset, list_sort(list_distinct(flatten(list(also_in)))) AS also_in,
           patient_id, any_value(sex) AS sex,
           -- the first study's age: by date, then visit order, then study id (ties would pick any study)
           arg_min(age_years, (coalesce(study_date, DATE '9999-12-31'), coalesce(visit_order, 2147483647), study_id))
           AS age_years, min(study_date) AS first_study_date, max(study_date) AS last_study_date,
           count(DISTINCT study_id) AS n_studies, count(*) AS n_images,
           count(*) FILTER (WHERE is_frontal) AS n_frontal, list_sort(list(DISTINCT split)) AS splits,
           list_sort(list(DISTINCT study_id)) AS study_ids, list(image_id ORDER BY image_id) AS image_ids,
           list(path ORDER BY image_id) AS paths
    FROM unit_img GROUP BY family, patient_id
  ) s LEFT JOIN labels_of l ON l.family = s.family AND l.patient_id = s.patient_id"""
    return ctes + f", base AS (\n  {body}\n)"


def base_sql(unit: str, datasets: tuple[str, ...] = (), *, folded: bool = True) -> str:
    """The unit's base relation as one SELECT (for exploring what a rule may use)."""
    return f"WITH {base_ctes(unit, datasets, folded=folded)} SELECT COLUMNS(lambda c: c <> 'family') FROM base"


# --- running -----------------------------------------------------------------------------------------
@dataclass
class CohortRun:
    cohort: Cohort
    out_dir: Path | None
    params: dict
    attrition: list[dict]
    manifest: pa.Table
    provenance: dict
    files: dict[str, Path] = field(default_factory=dict)
    # (dataset, patient_id, race, ethnicity) of the patients whose dataset records them
    demographics: "pa.Table | None" = field(default=None, repr=False)
    _table1: object | None = field(default=None, repr=False)

    @property
    def table1(self):
        """Table 1 (warehouse.table1.Table1; None for an empty cohort), built on first use: a run without an out
        folder (verify) does not need it."""
        if self._table1 is None and self.manifest.num_rows:
            self._table1 = _table1(self.manifest, self.provenance["findings"], self.demographics)
        return self._table1


def parse_split(text: str) -> tuple[float, float, float] | None:
    """'official' -> None; 'patient:0.8,0.1,0.1' -> the train, valid and test fractions."""
    if text == "official":
        return None
    kind, _, ratios = text.partition(":")
    try:
        parts = tuple(float(x) for x in ratios.split(","))
    except ValueError:
        parts = ()
    if kind != "patient" or len(parts) != 3 or any(p < 0 for p in parts) or abs(sum(parts) - 1) > 1e-6:
        raise CohortError(
            f"--split is `official` or `patient:TRAIN,VALID,TEST` with fractions summing to 1 "
            f"(e.g. patient:0.8,0.1,0.1), not {text!r}"
        )
    return parts


def patient_split(dataset: str, patient_id: str, seed: int, ratios: tuple[float, float, float]) -> str:
    """train, valid or test from sha256(f'{seed}:{dataset}:{patient_id}'): the same patient, the same split."""
    digest = hashlib.sha256(f"{seed}:{dataset}:{patient_id}".encode()).digest()
    x = int.from_bytes(digest[:8], "big") / 2**64
    if x < ratios[0]:
        return "train"
    return "valid" if x < ratios[0] + ratios[1] else "test"


def run_cohort(
    cohort: Cohort,
    warehouse: "Warehouse",
    params: dict | None = None,
    out_dir: Path | str | None = None,
    *,
    findings: list[str] | None = None,
    uncertain: str | None = None,
    split: str = "official",
    seed: int = 0,
    allow_leakage: bool = False,
    fmt: str = "parquet",
    say: Callable[[str], None] = lambda m: None,
) -> CohortRun:
    import pyarrow as pa

    started = datetime.now(UTC)
    clock = time.perf_counter()
    if fmt not in MANIFEST_FORMATS:
        raise CohortError(f"unknown manifest format {fmt!r}; known: {', '.join(MANIFEST_FORMATS)}")
    policy = (uncertain or cohort.uncertain).lower()
    if policy not in POLICIES:
        raise CohortError(f"--uncertain must be one of {', '.join(POLICIES)}, not {policy!r}")
    ratios = parse_split(split)
    values = cohort.resolve(params)
    header: list[str] = []
    for f in cohort.findings:  # `$name` in the findings header is a FINDING or FINDING[] parameter
        value = values.get(f[1:]) if f.startswith("$") else f
        header += [str(v) for v in value] if isinstance(value, list) else [str(value)] if value else []
    chosen = list(dict.fromkeys([*header, *(findings or [])]))
    cohort.check_names(chosen, values)
    roots = {d: r for d, r in warehouse.settings.images.items()}

    con = warehouse.connect()
    try:
        catalog = _catalog_facts(warehouse, con)
        linked = tuple(sorted(d for d, info in catalog["datasets"].items() if info.get("links_to")))
        run_sql = cohort.run_sql(chosen, policy, roots, linked, cohort.label_findings(values, chosen))
        units = warehouse.run(con, run_sql, _used(run_sql, values)).to_arrow_table()
        recorded = _race_and_ethnicity(warehouse, con)
    finally:
        con.close()
    row, manifest = _split_units(units)
    attrition = _attrition_rows(cohort, row)

    if ratios is not None:
        assigned = [
            patient_split(d, p, seed, ratios)
            for d, p in zip(manifest["dataset"].to_pylist(), manifest["patient_id"].to_pylist())
        ]
        manifest = manifest.set_column(
            manifest.schema.get_field_index("split"), "split", pa.array(assigned, pa.string())
        )
    _check_leakage(cohort, manifest, allow_leakage, ratios is not None)

    datasets = sorted(
        set(manifest["dataset"].to_pylist()) | {d for ds in manifest["also_in"].to_pylist() for d in ds or []}
    )
    provenance = {
        "cohort": cohort.name,
        "description": cohort.description,
        "unit": cohort.unit,
        "file": str(cohort.path) if cohort.path else None,
        "sql": cohort.text,
        "rules": [{"name": r.name, "sql": r.sql} for r in cohort.rules],
        "parameters": {k: (v.isoformat() if isinstance(v, date) else v) for k, v in values.items()},
        "findings": chosen,
        "uncertain": policy,
        "labeler_precedence": list(LABELER_PRECEDENCE),
        "split": split,
        "seed": seed if ratios is not None else None,
        "allow_leakage": allow_leakage,
        "datasets": datasets,
        "delta_versions": {
            t: {d: v for d, v in by.items() if d in datasets}
            for t, by in catalog["versions"].items()
            if any(d in datasets for d in by)
        },
        "source_fingerprints": {
            d: catalog["datasets"].get(d, {}).get("source_fingerprint") or "unknown" for d in datasets
        },
        "citations": {
            d: {
                "text": catalog["datasets"].get(d, {}).get("citation") or "unknown",
                "bibtex": catalog["datasets"].get(d, {}).get("bibtex") or "unknown",
            }
            for d in datasets
        },
        "licences": {
            d: {
                k: catalog["datasets"].get(d, {}).get(k) or ("unknown" if k in ("licence", "access") else None)
                for k in ("licence", "licence_url", "access", "licence_note")
            }
            for d in datasets
        },
        "schema_version": catalog["meta"].get("schema_version"),
        "warehouse_version": catalog["meta"].get("warehouse_version"),
        "project_version": _project_version(),
        "run_at": started.isoformat(timespec="seconds"),
        "seconds": None,
        "rows": manifest.num_rows,
        "attrition": attrition,
    }
    result = CohortRun(
        cohort, Path(out_dir) if out_dir else None, values, attrition, manifest, provenance, demographics=recorded
    )
    provenance["manifest_sha256"] = manifest_hash(manifest)
    if out_dir is not None:
        from . import croissant

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        result.files["manifest"] = _write_manifest(manifest, out, fmt)
        result.files["attrition"] = _write_attrition(attrition, out / "attrition.csv")
        if result.table1 is not None:
            from .table1 import write as write_table1

            result.files.update(write_table1(result.table1, out, cohort.name))
        document = croissant.describe(
            result.files["manifest"],
            manifest.schema,
            provenance,
            catalog["datasets"],
            manifest_descriptions(cohort.unit, chosen, policy),
        )
        result.files["croissant"] = croissant.write(out / "croissant.json", document)
    provenance["seconds"] = round(time.perf_counter() - clock, 3)
    if out_dir is not None:
        (out / "cohort.json").write_text(json.dumps(provenance, indent=2, default=str) + "\n")
        result.files["provenance"] = out / "cohort.json"
        say(f"{cohort.name}: {manifest.num_rows:,} {cohort.unit}s -> {out}")
    return result


def _split_units(result: pa.Table) -> tuple[tuple, pa.Table]:
    """run_sql's result: the attrition counts (the _c columns, the same on every row) and the manifest."""
    import pyarrow.compute as pc

    counts = [c for c in result.column_names if re.fullmatch(r"_c\d+", c)]
    row = tuple(result[c][0].as_py() for c in counts)
    manifest = result.drop_columns(counts)
    return row, manifest.filter(pc.is_valid(manifest["_unit"])).drop_columns(["_unit"])


def _used(sql: str, values: dict) -> dict:
    """Only the parameters the SQL names (DuckDB refuses extra named parameters)."""
    return {k: v for k, v in values.items() if re.search(rf"\${re.escape(k)}\b", sql)}


def _attrition_rows(cohort: Cohort, row: tuple) -> list[dict]:
    rows = [
        {
            "step": 0,
            "rule": "all",
            "sql": "",
            "images": row[0],
            "studies": row[1],
            "patients": row[2],
            "units_removed": 0,
            "removed_by_this_rule_alone": 0,
        }
    ]
    unit_index = UNITS.index(cohort.unit)
    for i, r in enumerate(cohort.rules):
        base = 3 + i * 4
        images, studies, patients, alone = row[base : base + 4]
        before = (rows[-1]["images"], rows[-1]["studies"], rows[-1]["patients"])[unit_index]
        now = (images, studies, patients)[unit_index]
        rows.append(
            {
                "step": i + 1,
                "rule": r.name,
                "sql": " ".join(r.sql.split()),
                "images": images,
                "studies": studies,
                "patients": patients,
                "units_removed": before - now,
                "removed_by_this_rule_alone": alone,
            }
        )
    return rows


def _check_leakage(cohort: Cohort, manifest, allow: bool, assigned: bool) -> None:
    """A patient in more than one split is an error naming examples, unless allowed."""
    split_of: dict[tuple, list] = {}
    if cohort.unit == "patient" and not assigned:
        for d, p, s in zip(
            manifest["dataset"].to_pylist(), manifest["patient_id"].to_pylist(), manifest["splits"].to_pylist()
        ):
            if len(s or []) > 1:
                split_of[(d, p)] = sorted(s)
    else:
        seen: dict[tuple, set] = {}
        for d, p, s in zip(
            manifest["dataset"].to_pylist(), manifest["patient_id"].to_pylist(), manifest["split"].to_pylist()
        ):
            seen.setdefault((d, p), set()).add(str(s))
        split_of = {k: sorted(v) for k, v in seen.items() if len(v) > 1}
    if split_of and not allow:
        examples = "; ".join(f"{d}:{p} in {', '.join(s)}" for (d, p), s in sorted(split_of.items())[:5])
        raise CohortError(
            f"cohort {cohort.name}: {len(split_of):,} patient(s) are in more than one split, "
            f"e.g. {examples}. Assign patient-level splits (--split patient:0.8,0.1,0.1) or pass "
            "--allow-leakage"
        )


def _catalog_facts(warehouse: "Warehouse", con) -> dict:
    versions: dict[str, dict[str, int]] = {}
    for table, dataset, version in warehouse.run(
        con, "SELECT table_name, dataset, delta_version FROM catalog_partitions ORDER BY ALL"
    ).fetchall():
        versions.setdefault(table, {})[dataset] = version
    # every column, so a catalog built before the licence columns existed still runs (they read as unknown)
    result = warehouse.run(con, "SELECT * FROM catalog_datasets")
    cols = [d[0] for d in result.description]
    datasets = {r[0]: dict(zip(cols, r)) for r in result.fetchall()}
    meta = dict(warehouse.run(con, "SELECT key, value FROM catalog_meta").fetchall())
    return {"versions": versions, "datasets": datasets, "meta": meta}


UNIT_KEYS = {"image": ("dataset", "image_id"), "study": ("dataset", "study_id"), "patient": ("dataset", "patient_id")}


def manifest_hash(manifest) -> str:
    """sha256 of the manifest's rows as JSON, one line per row in key order: equal hashes, equal rows."""
    import duckdb

    order = ", ".join(c for c in ("dataset", "patient_id", "study_id", "image_id") if c in manifest.column_names)
    con = duckdb.connect(config={"threads": 2})
    try:
        con.register("m", manifest)
        digest = con.execute(
            f"SELECT coalesce(sha256(string_agg(to_json(m)::VARCHAR, chr(10) ORDER BY {order})), sha256('')) FROM m"
        ).fetchone()
        assert digest is not None, "an aggregate query returns one row"
        return digest[0]
    finally:
        con.close()


def manifest_descriptions(unit: str, findings: list[str], policy: str) -> dict[str, str]:
    """One sentence per manifest column (for croissant.json), the base relation's meaning restated per unit."""
    plural = PLURAL[unit]
    text = {
        "dataset": "The dataset the unit is taken from (for linked datasets, the one the others link to).",
        "also_in": "Other datasets that hold or label the same unit under the same ids.",
        "patient_id": "Patient id as the source writes it.",
        "study_id": "Study id as the source writes it.",
        "image_id": "Image id as the source writes it.",
        "split": "The cohort's split: the official split, or the seeded patient-level split when assigned.",
        "official_split": "The source's own split.",
        "sex": "F, M or U (unknown).",
        "age_years": "Age in years at the study (at the first study for patients).",
        "view_position": "PA, AP, AP_SUPINE, LATERAL, LL, RL, OTHER or UNKNOWN.",
        "is_frontal": "PA, AP or AP supine.",
        "path": "Image path relative to the dataset's root.",
        "absolute_path": "Image path under the configured image root of the dataset (null without one).",
        "n_images": f"Images of the {unit}.",
        "n_frontal": f"Frontal images of the {unit}.",
        "n_studies": "Studies of the patient.",
        "image_ids": f"The {unit}'s image ids.",
        "study_ids": "The patient's study ids.",
        "splits": "Every official split the patient's images are in.",
        "view_positions": "View of each image, in image_ids order.",
        "paths": "Relative path of each image.",
        "absolute_paths": "Absolute path of each image (null without an image root).",
    }
    for f in findings:
        text[f] = (
            f"{f}: 1 positive, 0 negative, -1 uncertain after the {policy!r} policy, null when unstated; "
            f"one value per {unit} chosen by labeler precedence over its {plural}' labels."
        )
    return text


def _race_and_ethnicity(warehouse: "Warehouse", con) -> "pa.Table":
    """(dataset, patient_id, race, ethnicity) of the patients whose dataset, or one linked to it, records them
    (CheXpert Plus's for CheXpert's patients); the dataset is the one the others link to, as in the manifest.
    Kept as Arrow: building it in Python would import pandas (pyarrow checks for it), 0.6 s of a run."""
    return warehouse.run(
        con,
        """
        SELECT coalesce(d.links_to, p.dataset) AS dataset, p.patient_id,
               any_value(p.race) FILTER (WHERE p.race <> 'not_recorded') AS race,
               any_value(p.ethnicity) FILTER (WHERE p.ethnicity <> 'not_recorded') AS ethnicity
        FROM patients p JOIN catalog_datasets d ON d.dataset = p.dataset
        WHERE p.race <> 'not_recorded' OR p.ethnicity <> 'not_recorded'
        GROUP BY ALL""",
    ).to_arrow_table()


def _table1(manifest, findings: list[str], recorded: "pa.Table | None"):
    if manifest.num_rows == 0:
        return None
    from .table1 import build

    return build(manifest, findings, recorded)


def _project_version() -> str:
    from . import __version__

    return __version__


def _write_manifest(table, out: Path, fmt: str) -> Path:
    import pyarrow.parquet as pq

    if fmt == "parquet":
        path = out / "manifest.parquet"
        pq.write_table(table, path, compression="zstd")
        return path
    import duckdb

    path = out / ("manifest.csv" if fmt == "csv" else "manifest.jsonl")
    if fmt == "csv":
        from .export import export

        export(table.to_reader(), "csv", path)
        return path
    con = duckdb.connect()
    try:
        con.register("manifest", table)
        con.execute(f"COPY (SELECT * FROM manifest) TO {_lit(str(path))} (FORMAT json)")
    finally:
        con.close()
    return path


def _write_attrition(rows: list[dict], path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
