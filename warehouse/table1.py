"""Table 1 of a cohort: who is in it, per split and overall, with standardized mean differences between splits.

Built with `tableone` (the library epidemiologists already cite for it), from the manifest plus the
patients' race and ethnicity where a dataset records them. Rows:

- n (the cohort's units) and patients (distinct dataset + patient_id);
- age in years, mean (SD) and median [Q1,Q3];
- sex, race, ethnicity (race and ethnicity only when some dataset of the cohort records them; a unit whose
  dataset does not is `not recorded`);
- view (image cohorts: view_position; study and patient cohorts: whether a frontal image is among theirs);
- each chosen finding as the manifest has it after the uncertainty policy: positive, negative, uncertain
  (U-Ignore leaves none), or not stated.

SMD columns compare each pair of splits (tableone's `smd=True`: Cohen's d with the pooled SD for continuous
rows, Yang and Dalton's multinomial form for categorical ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

AGE_MEAN = "Age, years"
AGE_MEDIAN = "Age (median), years"
FINDING_WORDS = {1: "positive", 0: "negative", -1: "uncertain"}
NOT_RECORDED = "not recorded"
NOT_STATED = "not stated"


@dataclass
class Table1:
    frame: pd.DataFrame  # tableone's table: MultiIndex rows (variable, level), one column per group
    groups: list[str]  # the splits, in column order

    def to_csv(self, path: Path) -> Path:
        self.frame.to_csv(path)
        return path

    def to_markdown(self, path: Path, title: str) -> Path:
        import pandas as pd

        frame = self.frame.reset_index()
        header = ["variable", "level", *[c[1] if isinstance(c, tuple) else c for c in self.frame.columns]]
        rows = [["" if pd.isna(v) else str(v).replace("|", "\\|") for v in row] for row in frame.values.tolist()]
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        path.write_text(f"# Table 1: {title}\n\n" + "\n".join(lines) + "\n")
        return path


def unit_frame(manifest, findings: list[str], demographics: dict[tuple[str, str], tuple] | None = None) -> pd.DataFrame:
    """One row per unit with the columns Table 1 describes; `demographics` maps (dataset, patient_id) to
    (race, ethnicity) for the datasets that record them."""
    import pandas as pd

    columns = manifest.column_names
    n = manifest.num_rows
    frame = pd.DataFrame(
        {
            "split": [s if s is not None else "none" for s in manifest["split"].to_pylist()],
            "patient": [
                f"{d}\x1f{p}" for d, p in zip(manifest["dataset"].to_pylist(), manifest["patient_id"].to_pylist())
            ],
            AGE_MEAN: pd.array(manifest["age_years"].to_pylist(), dtype="Float64").astype(float),
            "Sex": manifest["sex"].to_pylist(),
        }
    )
    frame[AGE_MEDIAN] = frame[AGE_MEAN]
    if demographics:
        keys = list(zip(manifest["dataset"].to_pylist(), manifest["patient_id"].to_pylist()))
        frame["Race"] = [(demographics.get(k) or (None, None))[0] or NOT_RECORDED for k in keys]
        frame["Ethnicity"] = [(demographics.get(k) or (None, None))[1] or NOT_RECORDED for k in keys]
    if "view_position" in columns:
        frame["View"] = manifest["view_position"].to_pylist()
    elif "n_frontal" in columns:
        frame["Frontal image"] = ["yes" if (v or 0) > 0 else "no" for v in manifest["n_frontal"].to_pylist()]
    for f in findings:
        values = manifest[f].to_pylist() if f in columns else [None] * n
        frame[f] = [FINDING_WORDS.get(v, NOT_STATED) if v is not None else NOT_STATED for v in values]
    return frame


def build(frame: pd.DataFrame, findings: list[str]) -> Table1:
    """tableone over `unit_frame`'s rows, grouped by split, with an overall column and SMDs, plus a patients
    row beneath n."""
    import warnings

    import pandas as pd
    from tableone import TableOne

    categorical = [c for c in ("Sex", "Race", "Ethnicity", "View", "Frontal image", *findings) if c in frame]
    columns = [AGE_MEAN, AGE_MEDIAN, *categorical]
    groups = sorted(frame["split"].unique())
    grouped = len(groups) > 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tableone warns about normality tests and small cells
        table = TableOne(
            frame,
            columns=columns,
            categorical=categorical,
            continuous=[AGE_MEAN, AGE_MEDIAN],
            nonnormal=[AGE_MEDIAN],
            groupby="split" if grouped else None,
            smd=grouped,
            overall=True,
            missing=True,
            pval=False,
            decimals=1,
            order={
                c: sorted(frame[c].dropna().unique(), key=lambda v: (v in (NOT_STATED, NOT_RECORDED), str(v)))
                for c in categorical
            },
        )
    out = table.tableone.copy()
    patients = {"Overall": frame["patient"].nunique()}
    for g in groups:
        patients[g] = frame.loc[frame["split"] == g, "patient"].nunique()
    row = pd.DataFrame(
        [[""] * len(out.columns)], columns=out.columns, index=pd.MultiIndex.from_tuples([("patients", "")])
    )
    for col in out.columns:
        name = col[1] if isinstance(col, tuple) else col
        if name in patients:
            row[col] = str(patients[name])
    out = pd.concat([out.iloc[:1], row, out.iloc[1:]])
    return Table1(out, groups)


def write(table: Table1, out: Path, title: str) -> dict[str, Path]:
    return {"table1_csv": table.to_csv(out / "table1.csv"), "table1_md": table.to_markdown(out / "table1.md", title)}
