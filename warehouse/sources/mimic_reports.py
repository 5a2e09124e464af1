"""MIMIC-CXR report sections, found the way mimic-code's `section_parser.py` finds them.

The header regex is the official one (`\\n ([A-Z ()/,-]+):\\s`), and header names are normalized
with the official `normalize_section_names` rules: its table of 60-odd spellings (including the
misspellings it lists, `IMPRESSON`, `FINDNGS`, `COMPARISION`, ...), then its substring rule
(a header containing `impression`, `findings`, `history`, `comparison`), then its "describes the
whole study" rule (`CHEST, PA AND LATERAL:` is a findings header). The official names then feed
the four canonical sections: indication <- indication / history (which the normalizer already
folds CLINICAL HISTORY, PATIENT HISTORY, ... into), comparison, findings, impression <- impression
(CONCLUSION, FINDINGS AND IMPRESSION, ...). Everything else (EXAMINATION, TECHNIQUE, NOTIFICATION,
RECOMMENDATION(S), ADDENDUM, WET READ, the preamble, the official `last_paragraph` fallback) stays
only in full_text, so an impression count means "has an IMPRESSION-like header", as in the
published 83.2 %.

Addenda: a report may start with `FINAL ADDENDUM` text, separated from the `FINAL REPORT` by a
line of underscores (docs/datasets.md; [U] whether an addendum can also come after the report, so
either order is handled). Sections are read from the FINAL REPORT block only, so an addendum never
leaks into the original report's indication or impression; the addendum stays in full_text. (The official parser, which has no such rule, agrees whenever the addendum has no
canonical header of its own.)
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from functools import lru_cache

from ..text import SectionRules

HEADER = re.compile(r"\n ([A-Z ()/,-]+):\s")
# A full line of underscores (PHI is only three: `___`).
ADDENDUM_SEPARATOR = re.compile(r"^ *_{20,} *$\n?", re.MULTILINE)
FINAL_REPORT_TITLE = re.compile(r"^ *FINAL REPORT *$", re.MULTILINE)

# mimic-code normalize_section_names: exact spellings -> official section name.
OFFICIAL_NAMES = {
    "preamble": "preamble",
    "impression": "impression",
    "comparison": "comparison",
    "indication": "indication",
    "findings": "findings",
    "examination": "examination",
    "technique": "technique",
    "history": "history",
    "comparisons": "comparison",
    "clinical history": "history",
    "reason for examination": "indication",
    "notification": "notification",
    "reason for exam": "indication",
    "clinical information": "history",
    "exam": "examination",
    "clinical indication": "indication",
    "conclusion": "impression",
    "chest, two views": "findings",
    "recommendation(s)": "recommendations",
    "type of examination": "examination",
    "reference exam": "comparison",
    "patient history": "history",
    "addendum": "addendum",
    "comparison exam": "comparison",
    "date": "date",
    "comment": "comment",
    "findings and impression": "impression",
    "wet read": "wet read",
    "comparison film": "comparison",
    "recommendations": "recommendations",
    "findings/impression": "impression",
    "pfi": "history",
    "recommendation": "recommendations",
    "wetread": "wet read",
    # [U] the official table maps this one-off `NDICATION:` to impression, not indication; kept as written
    # there so our sections agree with the sectioning the CheXpert/NegBio labels were made from.
    "ndication": "impression",
    "impresson": "impression",
    "imprression": "impression",
    "imoression": "impression",
    "impressoin": "impression",
    "imprssion": "impression",
    "impresion": "impression",
    "imperssion": "impression",
    "mpression": "impression",
    "impession": "impression",
    "findings/ impression": "impression",
    "finding": "findings",
    "findins": "findings",
    "findindgs": "findings",
    "findgings": "findings",
    "findngs": "findings",
    "findnings": "findings",
    "finidngs": "findings",
    "idication": "indication",
    "reference findings": "findings",
    "comparision": "comparison",
    "comparsion": "comparison",
    "comparrison": "comparison",
    "comparisions": "comparison",
}
# Checked in this order when the exact table has no entry.
MAIN_SECTIONS = ("impression", "findings", "history", "comparison", "addendum")
WHOLE_STUDY = re.compile(
    "("
    + "|".join(
        (
            "chest",
            "portable",
            "pa and lateral",
            "lateral and pa",
            "ap and lateral",
            "lateral and ap",
            "frontal and",
            "two views",
            "frontal view",
            "pa view",
            "ap view",
            "one view",
            "lateral view",
            "bone window",
            "frontal upright",
            "frontal semi-upright",
            "ribs",
            "pa and lat",
        )
    )
    + ")"
)
# Official section name -> canonical column; names not listed stay only in full_text.
CANONICAL = {
    "indication": "indication",
    "history": "indication",
    "comparison": "comparison",
    "findings": "findings",
    "impression": "impression",
}


def official_name(header: str) -> str:
    """The section name mimic-code's normalizer gives a (lower-cased) header."""
    name = header.lower().strip()
    if name in OFFICIAL_NAMES:
        return OFFICIAL_NAMES[name]
    for main in MAIN_SECTIONS:
        if main in name:
            return main
    return "findings" if WHOLE_STUDY.search(name) else name


@lru_cache(maxsize=4096)
def canonical_section(header: str) -> str | None:
    """indication, comparison, findings, impression, or None for a header that feeds none of them."""
    return CANONICAL.get(official_name(header))


class CanonicalSections(Mapping[str, str]):
    """SectionRules' alias table, backed by the official rules (a dict cannot hold the substring rules)."""

    def __getitem__(self, header: str) -> str:
        section = canonical_section(header)
        if section is None:
            raise KeyError(header)
        return section

    def __iter__(self) -> Iterator[str]:
        return iter(name for name in OFFICIAL_NAMES if canonical_section(name))

    def __len__(self) -> int:
        return sum(1 for _ in self)


RULES = SectionRules(pattern=HEADER, aliases=CanonicalSections())


def report_block(text: str) -> str:
    """The FINAL REPORT part of a report that carries addenda; the whole text otherwise.

    Without a FINAL REPORT title, the first block that does not open as an addendum is the report.
    """
    blocks = ADDENDUM_SEPARATOR.split(text)
    if len(blocks) == 1:
        return text
    titled = [block for block in blocks if FINAL_REPORT_TITLE.search(block)]
    if titled:
        return titled[-1]
    plain = [block for block in blocks if not _opens_as_addendum(block)]
    return plain[0] if plain else text


def _opens_as_addendum(block: str) -> bool:
    first_line = next((line for line in block.splitlines() if line.strip()), "")
    return "ADDENDUM" in first_line.upper()


def sections(text: str) -> dict[str, str | None]:
    """indication / comparison / findings / impression of one report (None when absent).

    A newline is put in front so a header on the very first line is found too (the regex wants
    the newline that ends the line before a header).
    """
    return RULES.split("\n" + report_block(text))
