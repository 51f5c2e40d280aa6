"""The files of a results folder: records, tables (CSV + Markdown), figures and images, each written
atomically with its caption; per-query arrays of a run."""
from __future__ import annotations

import io
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from ..fileio import atomic_write, atomic_write_text
from .figure_check import figure_series

PathLike = Union[str, "os.PathLike[str]"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ------------------------------------------------------------------------------------------------ helpers
def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name.endswith((".json", ".csv", ".md", ".png")):
        raise ValueError(f"artifact name {name!r} must be letters, digits, '_', '-', '.' (no folder, no "
                         "extension), e.g. '02_dilemma_map'")
    return name


def _plain(value: Any, where: str) -> Any:
    """``value`` as plain JSON types; numpy scalars/arrays converted; non-finite floats are an error."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist(), where)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            raise ValueError(f"record: {where} is {float(value)}; recorded numbers must be finite "
                             "(use None for a missing value)")
        return float(value)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"record: {where} has type {type(value).__name__}; use numbers, strings, lists or dicts")


def _caption(folder: Path, name: str, caption: Optional[str], extra: Optional[Mapping[str, Any]] = None) -> None:
    text = caption if caption else name
    atomic_write_text(folder / f"{name}.json", json.dumps({"caption": text, **(extra or {})}, indent=1) + "\n")


# ------------------------------------------------------------------------------------------------ records
def record(results_dir: PathLike, name: str, data: Mapping[str, Any]) -> Path:
    """Write ``data`` (a dict of numbers / strings / lists / dicts) to ``results_dir/records/<name>.json``
    atomically and return the path. Non-finite numbers raise ``ValueError`` naming the key."""
    if not isinstance(data, Mapping):
        raise TypeError(f"record {name!r}: data must be a dict, got {type(data).__name__}")
    plain = _plain(data, name)
    path = Path(results_dir) / "records" / f"{_check_name(name)}.json"
    return atomic_write_text(path, json.dumps(plain, indent=1, sort_keys=True) + "\n")


def table_records(df) -> List[Dict[str, Any]]:
    """A table's rows as dicts for :func:`record`, its missing values (NaN, e.g. the budget of a reference
    row) as None."""
    return [{k: (None if isinstance(v, (float, np.floating)) and not math.isfinite(float(v)) else v)
             for k, v in r.items()} for r in df.to_dict("records")]


def load_record(results_dir: PathLike, name: str) -> Dict[str, Any]:
    path = Path(results_dir) / "records" / f"{_check_name(name)}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no record {name!r}: {path} does not exist")
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------------ tables
def _cell(v: Any, digits: int) -> str:
    if v is None or (isinstance(v, (float, np.floating)) and math.isnan(float(v))):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.{digits}f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


_NUMBERISH = re.compile(r"^-?[0-9.]+(e[+-]?[0-9]+)?( \[-?[0-9.]+, -?[0-9.]+\])?%?$|^$")


def to_markdown(df, digits: int = 2, index: bool = False) -> str:
    """A GitHub Markdown table of ``df`` (floats with ``digits`` decimals; columns of numbers, including text
    such as "81.2 [79.9, 82.6]", right-aligned)."""
    if index:
        df = df.reset_index()
    cols = [str(c) for c in df.columns]
    rows = [[_cell(v, digits) for v in r] for r in df.itertuples(index=False, name=None)]
    right = [bool(rows) and all(_NUMBERISH.match(r[j]) for r in rows)
             and not all(isinstance(v, (bool, np.bool_)) for v in df.iloc[:, j]) for j in range(len(cols))]
    lines = ["| " + " | ".join(c.replace("|", "\\|") for c in cols) + " |",
             "|" + "|".join("---:" if a else "---" for a in right) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def save_table(df, results_dir: PathLike, name: str, *, caption: Optional[str] = None, digits: int = 2,
               markdown_df=None) -> Tuple[Path, Path]:
    """Write ``df`` to ``results_dir/tables/<name>.csv`` and a Markdown rendering to ``<name>.md``
    (``markdown_df`` if given, e.g. with text columns such as "81.2 [79.9, 82.6]"); the caption goes to
    ``<name>.json``. Returns ``(csv_path, md_path)``."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"save_table {name!r}: expected a pandas DataFrame, got {type(df).__name__}")
    folder = Path(results_dir) / "tables"
    _check_name(name)
    csv_path = atomic_write_text(folder / f"{name}.csv", df.to_csv(index=False, float_format="%.6g"))
    md_path = atomic_write_text(folder / f"{name}.md", to_markdown(df if markdown_df is None else markdown_df,
                                                                  digits))
    _caption(folder, name, caption)
    return csv_path, md_path


def save_figure(fig, results_dir: PathLike, name: str, *, caption: Optional[str] = None, dpi: int = 110) -> Path:
    """Save a matplotlib figure as ``results_dir/figures/<name>.png`` (atomically, no version metadata), its
    caption and what it shows (:func:`~deap_lib.results.figure_check.figure_series`) in ``<name>.json``."""
    folder = Path(results_dir) / "figures"
    _check_name(name)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    path = atomic_write(folder / f"{name}.png", lambda f: f.write(buf.getvalue()))
    _caption(folder, name, caption, {"axes": figure_series(fig)})  # what it shows (results.figure_check)
    return path


def save_image(image, results_dir: PathLike, name: str, *, caption: Optional[str] = None) -> Path:
    """Save a PIL image as ``results_dir/figures/<name>.png`` (atomically)."""
    folder = Path(results_dir) / "figures"
    _check_name(name)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    path = atomic_write(folder / f"{name}.png", lambda f: f.write(buf.getvalue()))
    _caption(folder, name, caption)
    return path


# ------------------------------------------------------------------------------------------------ main table
def load_per_query(run_dir: PathLike, form: str) -> Dict[str, np.ndarray]:
    """The per-query arrays of ``form`` written by the runner (:meth:`deap_lib.rundir.RunDir.per_query`)."""
    from ..rundir import RunDir

    return RunDir(run_dir).per_query(form)
