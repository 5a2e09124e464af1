"""MIMIC-Ext-CXR-QBA 1.0.0: question-answer pairs, their sub-answers and boxes, and scene-graph labels.

Format notes (docs/datasets.md section 7; checked against the format-faithful sample generator, not
the real credentialed files):
- `qa.zip` holds one `qa/p1x/p1xxxxxxx/sxxxxxxxx.qa.json` per study (members with or without the
  `qa/` prefix are both read): {patient_id, study_id, questions: [{question_id, question_type,
  question_strategy, contains_*_answers, question, question_quality{rating,…}, answers: [...]}]}.
  Each answer has answer_id (int, unique within its question across levels), answer_type,
  answer_level, text, certainty, positiveness, regions, obs_entities, answer_quality, a
  `localization` object keyed by image id ({localization_reference_ids, bboxes [[x1,y1,x2,y2]…]})
  and `sub_answers` (the same shape, one level deeper).
- `scene_data.zip` holds `sxxxxxxxx.scene_graph.json` (observations keyed by obs id, each with
  obs_entities, positiveness pos/neg and probability) and `sxxxxxxxx.metadata.json`.
- `metadata/*_metadata.parquet` (or .csv.gz): dot-namespaced columns per level; patients, studies and
  images come from here (the Parquet is read when present, it is the same table as the CSV).
- `quality_mappings.csv`: field,code,label,grade — integer quality codes to grades. The question's
  overall grade is its `question_quality.rating` decoded through the `rating` rows; a code the file
  does not list is an error, never a guess. [U] the real integer table is unpublished; this is read,
  not assumed.
- Ids: QBA writes `p10000032` / `s50414267`; the prefixes are dropped so rows join MIMIC-CXR's
  partition (`10000032` / `50414267`); image ids are MIMIC dicom_ids as they are.
- Split: QBA has no split column [U]; it follows MIMIC-CXR's, read from the linked mimic_cxr source's
  `mimic-cxr-2.0.0-split.csv[.gz]` (validate -> valid). Without it every row is `unassigned`.
- Metadata fields (SOURCE_FIELDS names every column's destination): study.procedure is
  studies.procedure, image.patient_orientation images.patient_orientation; study.timestamp_since_first
  and study.timespan_since_prev (pandas timedeltas: duration[ns] in Parquet, `N days HH:MM:SS` in the
  CSV) become days_since_first / days_since_previous and order visit_order; the quality codes,
  num_observations, total_studies, total_study_timespan and the localization quality go to each level's
  source_attributes (codes as written). Sex, age and race are not in QBA: they are MIMIC-CXR's (MIMIC-IV's),
  and the derived demographics / image_labels read them from the linked mimic_cxr partition.
- Fine-tuning grade = A or better, pre-training grade = B or better, both on studies with a frontal
  image (the page's definition): `qa_questions.fine_tuning` / `pre_training`.

Labels (labeler `qba_scene_graph`): one row per study and observation entity. positiveness `neg` is 0;
`pos` with probability `positive` is 1; `pos` with a hedge (likely, may, possible, …) is -1 (the
CheXpert convention that hedged mentions are uncertain). When a study mentions an entity more than
once, positive beats uncertain beats negative; `method` keeps the probability word of the reading
kept, `locations` the regions of all its mentions.

What happens to bad input: QBA is all or nothing, because a study's QA missing is not visible in
any row. A truncated or empty qa.zip, a member path leaving the dataset (`../`, absolute), two
members for one study, a member that is not JSON (cut, empty, not UTF-8) or not of the documented
shape (a string where a number belongs), one without study_id or patient_id, a question_id twice
in one study, a question or answer without its quality rating, or a rating code quality_mappings.csv
does not list: SourceError naming the archive
member, and nothing of the dataset is published. Other members of qa.zip (a nested zip, a
README) are not read: one quarantine row each, with a note. A quality_mappings.csv row that cannot
be read, or whose code is not an integer, and a metadata file that is unreadable, truncated, or
without rows: SourceError naming the file (and line and column where there is one).

Streaming: both archives go through qba_stream (chunks of whole members parsed by DuckDB, never
extracted to disk, never all in memory). Sub-answers are typed to MAX_LEVEL nesting levels; an
answer nested deeper makes its member fail loudly rather than lose rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import polars as pl

from .. import findings
from . import values
from .base import DatasetInfo, SourceError, SourceFolder, SourceResult
from .csvread import read_csv
from .longitudinal import with_visits
from .mimic_cxr import SPLIT_COLUMNS, SPLIT_FILE, SPLIT_HEADER, SPLIT_WORDS
from .qba_stream import ChunkOutput, archive_members, member_quarantine, stream_members
from .quarantine import QUARANTINE_COLUMNS

INFO = DatasetInfo(
    id="mimic_qba",
    name="MIMIC-Ext-CXR-QBA",
    version="1.0.0",
    access="credentialed",
    default_data="samples",
    tables=("patients", "studies", "images", "labels", "qa_questions", "qa_answers", "qa_answer_boxes"),
    citation="Müller P, Kaissis G, Rueckert D. MIMIC-Ext-CXR-QBA: A Structured, Tagged, and Localized Visual "
    "Question Answering Dataset with Question-Box-Answer Triplets and Scene Graphs for Chest X-ray "
    "Images (version 1.0.0). PhysioNet, 2025.",
    homepage="https://physionet.org/content/mimic-ext-cxr-qba/1.0.0/",
    links_to="mimic_cxr",
    licence='PhysioNet Credentialed Health Data License 1.5.0',
    licence_url='https://physionet.org/content/mimic-ext-cxr-qba/view-license/1.0.0/',
    licence_note='As the project page states: only credentialed users who sign the PhysioNet Credentialed Health Data Use Agreement 1.5.0 can access the files.',
    bibtex="""@misc{mueller2025mimicextcxrqba,
  author = {M{\\"u}ller, Philip and Kaissis, Georgios and Rueckert, Daniel},
  title = {{MIMIC-Ext-CXR-QBA}: A Structured, Tagged, and Localized Visual Question Answering Dataset with Question-Box-Answer Triplets and Scene Graphs for Chest X-ray Images (version 1.0.0)},
  publisher = {PhysioNet},
  year = {2025}
}""",
)

QA_ZIP = "qa.zip"
SCENE_ZIP = "scene_data.zip"
QUALITY_FILE = "quality_mappings.csv"
QUALITY_HEADER = "field,code,label,grade,grade_if_related_information"
SOURCE_FIELDS: dict[str, dict[str, str | tuple[str, ...]]] = {
    "metadata/patient_metadata.csv": {
        "patient_id": "patients.patient_id",
        "patient.total_studies": "patients.source_attributes",
        "patient.total_study_timespan": "patients.source_attributes",
    },
    "metadata/study_metadata.csv": {
        "patient_id": "studies.patient_id",
        "study_id": "studies.study_id",
        **{
            f"study.quality.{c}": "studies.source_attributes"
            for c in (
                "rating",
                "region_quality",
                "entity_quality",
                "sentence_name_quality",
                "change_quality",
                "issue_level",
                "localization_quality",
            )
        },
        "study.num_observations": "studies.source_attributes",
        "study.procedure": "studies.procedure",
        "study.timestamp_since_first": ("studies.days_since_first", "studies.visit_order"),
        "study.timespan_since_prev": "studies.days_since_previous",
    },
    "metadata/image_metadata.csv": {
        "patient_id": "images.patient_id",
        "study_id": "images.study_id",
        "image_id": "images.image_id",
        "image.view_position": ("images.view_position", "images.view_source"),
        "image.patient_orientation": "images.patient_orientation",
        "image.size.width": "images.width",
        "image.size.height": "images.height",
        "image.quality.localization_quality": "images.source_attributes",
    },
}
METADATA = {level: f"metadata/{level}_metadata" for level in ("patient", "study", "image")}
MAX_LEVEL = 4  # answer levels 0..MAX_LEVEL are typed; the sample goes to 2
FINE_TUNING, PRE_TRAINING = ("A", "A+", "A++"), ("B", "A", "A+", "A++")
SURE = "positive"  # the probability word of an unhedged positive observation


def _answer_type(level: int) -> str:
    box = "MAP(VARCHAR, STRUCT(image_id VARCHAR, localization_reference_ids VARCHAR[], bboxes DOUBLE[][]))"
    fields = (
        "answer_id BIGINT, answer_type VARCHAR, answer_level INTEGER, text VARCHAR, certainty VARCHAR, "
        "positiveness VARCHAR, regions VARCHAR[], obs_entities VARCHAR[], answer_quality STRUCT(rating BIGINT), "
        f"localization {box}"
    )
    children = "JSON[]" if level == MAX_LEVEL else f"{_answer_type(level + 1)}[]"
    return f"STRUCT({fields}, sub_answers {children})"


QA_COLUMNS = {
    "m": "VARCHAR",
    "d": (
        "STRUCT(patient_id VARCHAR, study_id VARCHAR, questions STRUCT(question_id VARCHAR, question_type VARCHAR, "
        "question_strategy VARCHAR, contains_report_answers BOOLEAN, contains_template_answers BOOLEAN, "
        f"question VARCHAR, question_quality STRUCT(rating BIGINT), answers {_answer_type(0)}[])[])"
    ),
}
SCENE_COLUMNS = {
    "m": "VARCHAR",
    "d": (
        "STRUCT(patient_id VARCHAR, study_id VARCHAR, observations MAP(VARCHAR, STRUCT(obs_id VARCHAR, "
        "obs_entities VARCHAR[], positiveness VARCHAR, probability VARCHAR, regions STRUCT(region VARCHAR)[])))"
    ),
}


class MimicQba:
    info = INFO

    def source_files(self, src: SourceFolder) -> list[str]:
        names = [src.require(QA_ZIP), src.require(QUALITY_FILE)]
        names += [n for n in (src.first_existing(SCENE_ZIP),) if n]
        return names + [_metadata_file(src, level) for level in METADATA]

    def linked_source_files(self, mimic: SourceFolder) -> list[str]:
        """The one MIMIC-CXR file read here (the split), so a split change re-ingests QBA too."""
        return [n for n in (mimic.first_existing(SPLIT_FILE),) if n]

    def read(self, src: SourceFolder, progress=None, related=None) -> SourceResult:
        say = progress or (lambda message: None)
        quarantine: list[pl.DataFrame] = []
        notes: list[str] = []
        grades = _grades(src)
        splits, split_files = _study_splits((related or {}).get("mimic_cxr"), quarantine, notes)
        say("reading metadata")
        frames = {level: _read_metadata(src, level) for level in METADATA}
        studies = _studies(frames["study"], splits, notes)
        images = _images(frames["image"], studies)
        tables = {"patients": _patients(frames["patient"]), "studies": studies, "images": images}
        frontal = images.filter("is_frontal").select("study_id").unique()

        qa_infos, others = archive_members(src, QA_ZIP, ".qa.json")
        if not qa_infos:
            raise SourceError(src.display(QA_ZIP), "holds no *.qa.json members: there would be no questions")
        if others:
            notes.append(f"{len(others)} members of {QA_ZIP} are not *.qa.json and were not read")
            quarantine.append(_unread_members(src, others))
        scene = src.first_existing(SCENE_ZIP)
        scene_infos = archive_members(src, scene, ".scene_graph.json")[0] if scene else []
        if not scene:
            notes.append(f"no {SCENE_ZIP}: the labels table is empty")
            tables["labels"] = pl.DataFrame()

        def setup(con: duckdb.DuckDBPyConnection) -> None:
            con.register("grade_codes", grades.to_arrow())
            con.register("study_splits", studies.select("study_id", "split").to_arrow())
            con.register("frontal_studies", frontal.to_arrow())

        def batches() -> Iterator[tuple[str, pl.DataFrame]]:
            unreadable: list[pl.DataFrame] = []
            archives = [(QA_ZIP, qa_infos, _extract_qa, QA_COLUMNS, "qa_questions", "studies")]
            if scene:
                archives.append((scene, scene_infos, _extract_labels, SCENE_COLUMNS, "labels", "scene graphs"))
            for archive, infos, extract, columns, target, unit in archives:
                done = 0
                for out in stream_members(
                    src, archive, infos, extract, columns=columns, target_table=target, setup=setup
                ):
                    unreadable.extend(out.quarantine)
                    done += out.members
                    say(f"{archive}: {done:,}/{len(infos):,} {unit}")
                    yield from out.tables.items()
            _refuse_unreadable(unreadable)

        files = [
            QA_ZIP,
            QUALITY_FILE,
            *([scene] if scene else []),
            *split_files,
            *(_metadata_file(src, level) for level in METADATA),
        ]
        return SourceResult(tables, quarantine, files, notes, batches())


def _unread_members(src: SourceFolder, others) -> pl.DataFrame:
    """One quarantine row per member of qa.zip that is not a study's QA document."""
    return pl.DataFrame(
        [
            member_quarantine(
                "qa_questions",
                src.display(f"{QA_ZIP}:{info.filename}"),
                "not a *.qa.json member (e.g. a nested archive); it is not read",
            )
            for info in others
        ],
        schema=QUARANTINE_COLUMNS,
    )


def _refuse_unreadable(unreadable: list[pl.DataFrame]) -> None:
    """A member that cannot be read is a whole study missing: name every one and publish nothing."""
    bad = pl.concat(unreadable) if unreadable else pl.DataFrame()
    if bad.is_empty():
        return
    lines = "\n  ".join(f"{row['source_file']}: {row['reason']}" for row in bad.head(20).iter_rows(named=True))
    more = f"\n  … and {bad.height - 20} more" if bad.height > 20 else ""
    raise SourceError(
        f"{bad.height} archive member(s)",
        "cannot be read, so their studies' QA would be missing; "
        f"the partition is not published (the previous one stays):\n  {lines}{more}",
    )


# --- small files ------------------------------------------------------------------------------


def _grades(src: SourceFolder) -> pl.DataFrame:
    """(code, grade) of the overall `rating` field; the code for 'unrated' has an empty grade."""
    name = src.require(QUALITY_FILE)
    read = read_csv(
        src,
        name,
        columns={c: "VARCHAR" for c in QUALITY_HEADER.split(",")},
        header=QUALITY_HEADER,
        target_table="qa_questions",
    )
    if not read.rejects.is_empty():
        bad = read.rejects.row(0, named=True)
        raise SourceError(
            src.display(name),
            f"cannot be read ({bad['reason']}); every code is needed to grade questions",
            line=bad["line_number"],
            column=bad["column_name"] or None,
        )
    rating = read.frame.filter(pl.col("field") == "rating")
    if rating.is_empty():
        raise SourceError(src.display(name), "has no rows for field 'rating': question grades cannot be decoded")
    codes = rating["code"].str.strip_chars().cast(pl.Int64, strict=False)
    if codes.null_count():
        row = rating.filter(codes.is_null()).row(0, named=True)
        raise SourceError(
            src.display(name), f"code {row['code']!r} is not an integer", line=row["_row"] + 1, column="code"
        )
    grades = rating.select(codes.alias("code"), pl.col("grade").fill_null("unrated").alias("grade"))
    unknown = set(grades["grade"]) - {"A++", "A+", "A", "B", "C", "D", "unrated"}
    if unknown:
        raise SourceError(src.display(name), f"column grade has values outside A++…D: {sorted(unknown)}")
    return grades


def _study_splits(mimic: SourceFolder | None, quarantine: list, notes: list) -> tuple[pl.DataFrame, list[str]]:
    """study_id -> split from MIMIC-CXR's split file (QBA follows MIMIC-CXR's split)."""
    name = mimic.first_existing(SPLIT_FILE) if mimic else None
    if mimic is None or name is None:
        notes.append(f"no {SPLIT_FILE}[.gz] in the linked mimic_cxr source: every split is 'unassigned'")
        return pl.DataFrame(schema={"study_id": pl.String, "split": pl.String}), []
    read = read_csv(mimic, name, columns=SPLIT_COLUMNS, header=SPLIT_HEADER, target_table="studies")
    quarantine.append(read.rejects)
    splits = read.frame.select("study_id", pl.col("split").replace_strict(SPLIT_WORDS, default="unassigned"))
    return splits.unique("study_id", keep="first"), [mimic.display(name)]


def _metadata_file(src: SourceFolder, level: str) -> str:
    return src.require(METADATA[level] + ".parquet", METADATA[level] + ".csv")


def _read_metadata(src: SourceFolder, level: str) -> pl.DataFrame:
    name = _metadata_file(src, level)
    try:
        with src.open(name) as f:
            frame = pl.read_parquet(f) if name.endswith(".parquet") else pl.read_csv(f, infer_schema=False)
    except (pl.exceptions.PolarsError, OSError, EOFError, ValueError) as e:
        raise SourceError(src.display(name), f"cannot be read ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if frame.is_empty():
        raise SourceError(src.display(name), f"has no rows: the {level} level cannot be empty")
    expected = {
        "patient": {"patient_id"},
        "study": {"patient_id", "study_id"},
        "image": {"patient_id", "study_id", "image_id"},
    }[level]
    if not expected <= set(frame.columns):
        raise SourceError(
            src.display(name),
            f"lacks the index column(s) {sorted(expected - set(frame.columns))}; found {frame.columns}",
        )
    return frame.with_columns(*(_strip_prefix(c) for c in ("patient_id", "study_id") if c in frame.columns))


def _strip_prefix(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.String).str.replace(r"^[ps]", "").alias(column)


def _attributes(frame: pl.DataFrame, level: str) -> pl.Expr:
    """The level's source_attributes: every declared attribute column the file has, as written, and any column
    SOURCE_FIELDS does not name (so a field of the real release the format notes missed is kept too)."""
    declared = SOURCE_FIELDS[f"metadata/{level}_metadata.csv"]
    fields = values.attribute_fields(declared, TABLE_OF[level])
    fields += [c for c in frame.columns if c not in declared and c.startswith(f"{level}.")]
    return values.attributes({name: _text(frame, name) for name in fields if name in frame.columns}).alias(
        "source_attributes"
    )


TABLE_OF = {"patient": "patients", "study": "studies", "image": "images"}


def _text(frame: pl.DataFrame, name: str) -> pl.Expr:
    """A column as text; a Parquet duration as pandas writes it in the CSV (`N days HH:MM:SS`)."""
    if isinstance(frame.schema[name], pl.Duration):
        return _duration_text(pl.col(name))
    return pl.col(name).cast(pl.String)


def _duration_text(d: pl.Expr) -> pl.Expr:
    seconds = d.dt.total_seconds()
    return pl.format(
        "{} days {}:{}:{}",
        seconds // 86_400,
        ((seconds % 86_400) // 3600).cast(pl.String).str.zfill(2),
        ((seconds % 3600) // 60).cast(pl.String).str.zfill(2),
        (seconds % 60).cast(pl.String).str.zfill(2),
    )


def _days(frame: pl.DataFrame, name: str) -> pl.Expr:
    """Days (fractional) of a timedelta column: duration[ns] in Parquet, `N days HH:MM:SS[.f]` text in the CSV."""
    if name not in frame.columns:
        return pl.lit(None, pl.Float64)
    if isinstance(frame.schema[name], pl.Duration):
        return pl.col(name).dt.total_microseconds().cast(pl.Float64) / 86_400e6
    parts = pl.col(name).cast(pl.String).str.extract_groups(r"^\s*(-?\d+) days?,? ?\+?(\d+):(\d+):(\d+(?:\.\d+)?)\s*$")
    return (
        parts.struct.field("1").cast(pl.Float64)
        + parts.struct.field("2").cast(pl.Float64) / 24
        + parts.struct.field("3").cast(pl.Float64) / 1440
        + parts.struct.field("4").cast(pl.Float64) / 86_400
    )


def _patients(frame: pl.DataFrame) -> pl.DataFrame:
    # QBA carries no demographics; sex, age and race live in the mimic_cxr partition under the same ids
    # (race stays the schema default `not_recorded` here: QBA's own files do not record it).
    return frame.select("patient_id", pl.lit("U").alias("sex"), _attributes(frame, "patient"))


def _studies(frame: pl.DataFrame, splits: pl.DataFrame, notes: list) -> pl.DataFrame:
    joined = frame.join(splits, on="study_id", how="left")
    unlisted = joined["split"].null_count()
    if unlisted and not splits.is_empty():
        notes.append(f"{unlisted} studies are not in MIMIC-CXR's split file: split 'unassigned'")
    studies = joined.select(
        "study_id",
        "patient_id",
        pl.col("split").fill_null("unassigned"),
        (
            pl.col("study.procedure").cast(pl.String)
            if "study.procedure" in joined.columns
            else pl.lit(None, pl.String)
        ).alias("procedure"),
        _days(joined, "study.timestamp_since_first").alias("days_since_first"),
        _days(joined, "study.timespan_since_prev").alias("days_since_previous"),
        _attributes(joined, "study"),
    )
    return with_visits(
        studies.with_columns(pl.col("days_since_first").alias("_since_first")), [pl.col("_since_first")]
    ).drop("_since_first")


def _images(frame: pl.DataFrame, studies: pl.DataFrame) -> pl.DataFrame:
    view = values.view_position(pl.col("image.view_position"))
    return frame.join(studies.select("study_id", "split"), on="study_id", how="left").select(
        pl.col("image_id").cast(pl.String),
        "study_id",
        "patient_id",
        pl.col("split").fill_null("unassigned"),
        view.alias("view_position"),
        pl.col("image.view_position").alias("view_source"),
        values.is_frontal(view).alias("is_frontal"),
        pl.col("image.size.width").cast(pl.Int32).alias("width"),
        pl.col("image.size.height").cast(pl.Int32).alias("height"),
        (
            pl.col("image.patient_orientation").cast(pl.String)
            if "image.patient_orientation" in frame.columns
            else pl.lit(None, pl.String)
        ).alias("patient_orientation"),
        _attributes(frame, "image"),
    )


# --- streamed archives (run in qba_stream's worker threads, one DuckDB connection each) --------

ANSWER_FIELDS = (
    "a.answer_id AS answer_id, a.answer_type AS answer_type, a.answer_level AS answer_level, "
    "a.text AS text, a.certainty AS certainty, a.positiveness AS positiveness, a.regions AS regions, "
    "a.obs_entities AS entities, a.answer_quality.rating AS rating, a.localization AS localization"
)


def _flatten_answers(con: duckdb.DuckDBPyConnection, where) -> None:
    """Temp table `answers`: every answer of every level, flat, with its parent's id.

    Level n+1 is unnested from level n's sub_answers; only the flat fields are copied into
    `answers`, so nested sub-answer lists are never cast or copied more than once per level.
    """
    con.execute(
        "CREATE OR REPLACE TEMP TABLE level AS SELECT sid, qid, NULL::BIGINT AS parent, unnest(q.answers) AS a FROM qs"
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE answers AS SELECT sid, qid, parent, {ANSWER_FIELDS} FROM level")
    for depth in range(1, MAX_LEVEL + 1):
        con.execute(
            "CREATE OR REPLACE TEMP TABLE level AS SELECT sid, qid, a.answer_id AS parent, "
            "unnest(a.sub_answers) AS a FROM level WHERE len(a.sub_answers) > 0"
        )
        if depth == MAX_LEVEL:
            deeper = con.sql(
                "SELECT qs.m FROM level JOIN qs USING (sid, qid) WHERE len(a.sub_answers) > 0 LIMIT 1"
            ).fetchall()
            if deeper:
                raise SourceError(
                    where(deeper[0][0]),
                    f"has answers nested deeper than level {MAX_LEVEL}; "
                    "raise MAX_LEVEL in warehouse/sources/mimic_qba.py",
                )
        con.execute(f"INSERT INTO answers SELECT sid, qid, parent, {ANSWER_FIELDS} FROM level")


def _refuse_ungraded(con: duckdb.DuckDBPyConnection, where) -> None:
    """A question or answer whose rating is missing, or a code quality_mappings.csv lacks, is refused.

    Joined to the grade table, such a question would vanish and such an answer would get a null
    quality_grade: either way a grade would be lost without a word, so the member is named instead.
    """
    for field, sql in (
        (
            "question_quality.rating",
            "SELECT m, qid, q.question_quality.rating FROM qs ANTI JOIN grade_codes g "
            "ON g.code = q.question_quality.rating LIMIT 1",
        ),
        (
            "answer_quality.rating",
            "SELECT qs.m, a.qid, a.rating FROM (SELECT * FROM answers ANTI JOIN grade_codes g "
            "ON g.code = answers.rating LIMIT 1) a JOIN qs USING (sid, qid)",
        ),
    ):
        bad = con.sql(sql).fetchall()
        if bad:
            member, question, code = bad[0]
            problem = (
                f"has no {field} for question {question!r}"
                if code is None
                else f"{field} {code} (question {question!r}) is not a code in {QUALITY_FILE}"
            )
            raise SourceError(where(member), problem, column=field)


def _refuse_bad_keys(con: duckdb.DuckDBPyConnection, where) -> None:
    """A member without its study or patient id, or with a question id twice, cannot be keyed."""
    for column in ("study_id", "patient_id"):
        missing = con.sql(f"SELECT m FROM chunk WHERE d.{column} IS NULL OR trim(d.{column}) = '' LIMIT 1").fetchall()
        if missing:
            raise SourceError(where(missing[0][0]), f"has no {column}, so its questions cannot be keyed", column=column)
    twice = con.sql("SELECT m, qid FROM qs GROUP BY m, qid HAVING count(*) > 1 LIMIT 1").fetchall()
    if twice:
        raise SourceError(where(twice[0][0]), f"holds question_id {twice[0][1]!r} twice", column="question_id")


def _extract_qa(con: duckdb.DuckDBPyConnection, where) -> ChunkOutput:
    con.execute("""
        CREATE OR REPLACE TEMP TABLE qs AS
        SELECT m, regexp_replace(d.study_id, '^s', '') AS sid, regexp_replace(d.patient_id, '^p', '') AS pid,
               q.question_id AS qid, q
        FROM (SELECT m, d, unnest(d.questions) AS q FROM chunk)""")
    _refuse_bad_keys(con, where)
    _flatten_answers(con, where)
    _refuse_ungraded(con, where)
    fine, pre = (", ".join(f"'{g}'" for g in grades) for grades in (FINE_TUNING, PRE_TRAINING))
    # no ORDER BY: qa_questions is re-sorted after staging (warehouse/recluster.py)
    questions = con.sql(f"""
        WITH counts AS (SELECT sid, qid, count(*)::INTEGER AS n FROM answers GROUP BY ALL)
        SELECT qs.sid AS study_id, qs.pid AS patient_id, coalesce(s.split, 'unassigned') AS split,
               qs.qid AS question_id,
               regexp_replace(qs.qid, '_[0-9]+$', '') AS question_type,
               q.question_strategy, q.question, g.grade AS quality_grade,
               g.grade IN ({fine}) AND f.study_id IS NOT NULL AS fine_tuning,
               g.grade IN ({pre}) AND f.study_id IS NOT NULL AS pre_training,
               q.contains_report_answers, q.contains_template_answers, coalesce(c.n, 0) AS num_answers
        FROM qs JOIN grade_codes g ON g.code = q.question_quality.rating
        LEFT JOIN counts c ON c.sid = qs.sid AND c.qid = qs.qid
        LEFT JOIN study_splits s ON s.study_id = qs.sid
        LEFT JOIN frontal_studies f ON f.study_id = qs.sid""").pl()
    answers = con.sql("""
        SELECT a.sid AS study_id, coalesce(s.split, 'unassigned') AS split, a.qid AS question_id,
               a.answer_id::VARCHAR AS answer_id, a.parent::VARCHAR AS parent_answer_id,
               a.answer_level::SMALLINT AS answer_level, a.answer_type, a.text, a.positiveness,
               a.certainty, a.entities, a.regions, g.grade AS quality_grade
        FROM answers a LEFT JOIN study_splits s ON s.study_id = a.sid
        LEFT JOIN grade_codes g ON g.code = a.rating
        ORDER BY a.sid, a.qid, a.answer_id""").pl()
    boxes = con.sql("""
        WITH per_image AS (
            SELECT sid, qid, answer_id AS aid, unnest(map_values(localization)) AS loc FROM answers),
        per_box AS (
            SELECT sid, qid, aid, loc.image_id, loc.localization_reference_ids AS refs, len(loc.bboxes) AS n,
                   unnest(loc.bboxes) AS box, unnest(range(len(loc.bboxes))) AS box_index
            FROM per_image WHERE len(loc.bboxes) > 0)
        SELECT b.sid AS study_id, coalesce(s.split, 'unassigned') AS split, qid AS question_id,
               aid::VARCHAR AS answer_id, image_id, box_index::SMALLINT AS box_index,
               CASE WHEN len(refs) = n THEN refs[box_index + 1] END AS region,
               box[1]::FLOAT AS x1, box[2]::FLOAT AS y1, box[3]::FLOAT AS x2, box[4]::FLOAT AS y2
        FROM per_box b LEFT JOIN study_splits s ON s.study_id = b.sid
        ORDER BY b.sid, qid, aid, image_id, box_index""").pl()
    return ChunkOutput({"qa_questions": questions, "qa_answers": answers, "qa_answer_boxes": boxes})


def _extract_labels(con: duckdb.DuckDBPyConnection, where) -> ChunkOutput:
    labels = con.sql(f"""
        WITH obs AS (
            SELECT regexp_replace(d.study_id, '^s', '') AS study_id, unnest(map_values(d.observations)) AS o
            FROM chunk),
        mentions AS (
            SELECT study_id, o.obs_id, unnest(o.obs_entities) AS raw_label, o.probability AS method,
                   CASE WHEN o.positiveness = 'neg' THEN 0 WHEN o.probability = '{SURE}' THEN 1 ELSE -1 END AS value,
                   [r.region FOR r IN o.regions] AS regions
            FROM obs WHERE o.positiveness IN ('pos', 'neg'))
        SELECT study_id, raw_label, 'qba_scene_graph' AS labeler,
               -- positive beats uncertain beats negative; the last observation id wins a tie
               arg_max(value, {{r: CASE value WHEN 1 THEN 2 WHEN -1 THEN 1 ELSE 0 END, o: obs_id}})::TINYINT
                   AS value,
               arg_max(method, {{r: CASE value WHEN 1 THEN 2 WHEN -1 THEN 1 ELSE 0 END, o: obs_id}}) AS method,
               nullif(list_sort(list_distinct(flatten(list(regions)))), []) AS locations
        FROM mentions GROUP BY study_id, raw_label ORDER BY study_id, raw_label""").pl()
    if labels.is_empty():
        return ChunkOutput({})
    return ChunkOutput({"labels": findings.with_findings(labels, "qba_scene_graph")})


ADAPTER = MimicQba()
