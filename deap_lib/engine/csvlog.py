"""Per-epoch CSV log, rewritten atomically from the full history after every epoch.

Rewriting (instead of appending) keeps the file consistent with the checkpoint after a resume and lets
later epochs add columns (e.g. an evaluation hook that runs every few epochs).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

from ..fileio import atomic_write_text


def write_csv(path: Union[str, Path], rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``rows`` with the union of their keys as columns (first-seen order); missing cells are empty."""
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(v) for k, v in row.items()})
    return atomic_write_text(path, buf.getvalue())


def _fmt(v: Any) -> Any:
    return repr(v) if isinstance(v, float) else v


def read_csv(path: Union[str, Path]) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
