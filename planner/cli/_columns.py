"""Aligned text tables with a header row, for the listing commands (`plan models`, `plan gpus`)."""

from __future__ import annotations

from collections.abc import Sequence


def columns(headers: tuple[str, ...], rows: Sequence[tuple[str, ...]], right: frozenset = frozenset()) -> str:
    """Header, a rule, then the rows; each column as wide as its widest cell. Columns whose
    index is in ``right`` (numbers) are right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells) -> str:
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(headers), line("-" * w for w in widths), *(line(r) for r in rows)])
