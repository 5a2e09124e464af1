"""Report text: one tokenizer for every dataset, and a section splitter for free-text reports.

Tokenizer (documented once, used everywhere): a token is a maximal run of non-whitespace
characters, i.e. Python's `str.split()` with no argument. "No pleural effusion." is 3 tokens.
It is language-agnostic (PadChest's Spanish reports count the same way), needs no model, and
gives the same number in SQL (`len(string_split_regex(trim(x), '\\s+'))`), polars and Python.
Absent sections (null, empty, whitespace-only) have no token count (null), so means over a
split are means over the reports that have the section.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

TOKEN_PATTERN = r"\S+"  # the tokenizer: a token is a maximal run of non-whitespace characters
SECTIONS = ("indication", "comparison", "findings", "impression")


def token_count(column: str) -> pl.Expr:
    """Tokens per value of a text column; null where the text is absent."""
    text = pl.col(column)
    count = text.str.count_matches(TOKEN_PATTERN).cast(pl.Int32)
    return pl.when(text.is_null() | (text.str.strip_chars() == "")).then(None).otherwise(count)


def with_token_counts(reports: pl.DataFrame) -> pl.DataFrame:
    """Add tokens_<section> for each of the four canonical sections present in the frame."""
    return reports.with_columns(token_count(s).alias(f"tokens_{s}") for s in SECTIONS if s in reports.columns)


def blank_to_null(column: str, *, also: tuple[str, ...] = ()) -> pl.Expr:
    """Strip a section; empty text (or one of the `also` placeholders, compared case-insensitively) is null."""
    text = pl.col(column).str.strip_chars()
    absent = text.is_null() | (text == "")
    for placeholder in also:
        absent = absent | (text.str.to_lowercase() == placeholder.lower())
    return pl.when(absent).then(None).otherwise(text).alias(column)


@dataclass(frozen=True)
class SectionRules:
    """How to find headers in a dataset's free text and which canonical section each one feeds.

    `pattern` must capture the header name in group 1 (e.g. MIMIC's official `\\n ([A-Z ()/,-]+):\\s`).
    `aliases` maps a normalized header (lower case, single spaces) to indication, comparison,
    findings or impression; other headers stay only in full_text. When a section's header
    appears more than once, the texts are joined in order.
    """

    pattern: re.Pattern
    aliases: Mapping[str, str]

    def split(self, text: str) -> dict[str, str | None]:
        found: dict[str, list[str]] = {}
        matches = list(self.pattern.finditer(text))
        for i, match in enumerate(matches):
            header = " ".join(match.group(1).lower().split())
            section = self.aliases.get(header)
            if section is None:
                continue
            end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
            body = " ".join(text[match.end() : end].split())
            if body:
                found.setdefault(section, []).append(body)
        return {s: (" ".join(found[s]) if s in found else None) for s in SECTIONS}
