"""Cell formatting shared by the HTML and Markdown writers."""

from __future__ import annotations


def percent_text(p: float) -> str:
    """100%, 0%, and never a rounded 100% or 0% for a column that is not quite full or empty."""
    if p >= 100:
        return "100%"
    if p <= 0:
        return "0%"
    if p >= 99.95:
        return ">99.9%"
    if p < 0.05:
        return "<0.1%"
    return f"{p:.1f}%".replace(".0%", "%")


def heat(p: float) -> tuple[str, str]:
    """(background, text colour) of a non-null percent: pale for empty, deep blue for full."""
    lo, hi = (244, 247, 251), (30, 79, 122)
    t = max(0.0, min(1.0, p / 100))
    rgb = tuple(round(a + (b - a) * t) for a, b in zip(lo, hi))
    return f"rgb({rgb[0]},{rgb[1]},{rgb[2]})", "#ffffff" if t > 0.55 else "#1f2933"


def cell_text(value) -> str:
    """A catalog value as text: lists joined, maps as key=value, None as an empty string."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(cell_text(v) for v in value)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
