"""Markdown figures and tables, shared by the report and the many-streams table."""

from __future__ import annotations

from typing import Any


def fmt(v: Any, digits: int = 2, unit: str = "") -> str:
    """A figure as the report prints it: – for none, yes/no, floats with `digits` decimals."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v}{unit}"
    if isinstance(v, float):
        return f"{v:.{digits}f}{unit}"
    return str(v)


def pct(v: Any) -> str:
    """A share as a percentage with one decimal (– for none)."""
    return "–" if v is None else f"{100 * v:.1f}%"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table, one line per row."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out
