"""Markdown and CSV tables: the one way kldm and the scripts write them.

Light on purpose (no numpy, no torch): :mod:`kspace_ldm.evaluate` imports it and must stay
loadable without torch.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

from kspace_ldm.io import atomic_write_text

__all__ = ["csv_text", "markdown_row", "markdown_rule", "markdown_table", "write_csv"]


def markdown_row(cells: Iterable[object]) -> str:
    """One Markdown table line ``| a | b |`` (each cell through ``str``; an empty cell ``|  |``)."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown_rule(columns: int) -> str:
    """The header rule ``|---|---|`` of a table of ``columns`` columns."""
    return "|" + "---|" * columns


def markdown_table(header: Sequence[object], rows: Iterable[Iterable[object]]) -> str:
    """A Markdown table: the header line, its rule, one line per row; no trailing newline."""
    lines = [markdown_row(header), markdown_rule(len(header))]
    lines += [markdown_row(r) for r in rows]
    return "\n".join(lines)


def csv_text(header: Sequence[object], rows: Iterable[Iterable[object]]) -> str:
    """CSV text (``csv`` module quoting, ``\\n`` line ends): the header, then the rows."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def write_csv(path: str | Path, header: Sequence[object], rows: Iterable[Iterable[object]]) -> None:
    """Write :func:`csv_text` to ``path`` atomically (a failed write leaves no partial file)."""
    atomic_write_text(path, csv_text(header, rows))
