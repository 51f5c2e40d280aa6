"""``python -m deap_lib reproduce``: run the numbered study notebooks headlessly with papermill.

The core study runs :data:`~deap_lib.notebooks.CORE_NOTEBOOKS` (00-04), the full one every notebook. Each
notebook in ``notebooks/`` (00 ... 08) is executed in :data:`NOTEBOOKS` order (04, the summary of the
DEAP study, after 05, 07 and 08; then 06, the resolution study, which places its points among the study's runs) into
``<out>/executed/<name>.ipynb`` with
the study parameters injected after its ``parameters`` cell, by a kernel running this interpreter. Next to
it a stamp ``<name>.stamp.json`` keeps the parameters, the notebook's hash and the code version; a stage
whose stamp matches (same parameters, same notebook) and whose outputs exist is reused unless ``force``.
Once a stage runs, the later ones run too. Before a stage runs, its earlier tables / figures / record
(names starting with its number) are removed, so the results folder holds what the notebooks now make. The training runs themselves are cached by
:class:`deap_lib.study.Study` (same config -> reused), so re-executing a notebook is cheap. Finally the
README's results section is regenerated from ``<out>``.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from .fileio import atomic_write_text

from .notebooks import CORE_NOTEBOOKS, NOTEBOOKS, notebook_dir

PathLike = Union[str, "os.PathLike[str]"]


class NotebookFailed(RuntimeError):
    """A notebook raised while executing; the message names the cell and the saved failed copy."""


def kernel_python(kernel_name: str = "python3") -> str:
    """The interpreter the Jupyter kernel ``kernel_name`` runs; it must be this one (``sys.executable``)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    hint = (f"register this interpreter with `{sys.executable} -m ipykernel install --sys-prefix "
            f"--name {kernel_name}`")
    try:
        spec = KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel as e:
        raise RuntimeError(f"no Jupyter kernel named {kernel_name!r}: {hint}") from e
    exe = spec.argv[0] if spec.argv else ""
    generic = {"python", f"python{sys.version_info[0]}", "python%d.%d" % sys.version_info[:2]}
    if exe in generic:  # jupyter_client starts these as sys.executable
        return sys.executable
    if Path(exe).absolute().parent != Path(sys.executable).absolute().parent:
        raise RuntimeError(f"Jupyter kernel {kernel_name!r} ({spec.resource_dir}) runs {exe}, not this "
                           f"interpreter ({sys.executable}); {hint}, or pass kernel_name=")
    return exe


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def notebook_parameters(path: PathLike) -> List[str]:
    """Names assigned in the notebook's cell tagged ``parameters``."""
    import ast

    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path}: expected one code cell tagged 'parameters', found {len(cells)}")
    tree = ast.parse(cells[0].source)
    return [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
            if isinstance(t, ast.Name)]


def _stamp_key(stamp: Dict[str, Any]) -> Dict[str, Any]:
    return {"parameters": stamp.get("parameters"), "notebook_sha256": stamp.get("notebook_sha256")}


def _covers(old: Dict[str, Any], new: Dict[str, Any]) -> bool:
    """Whether an executed notebook's stamp serves a request: the same parameters and notebook, or a full
    execution where the core one is asked for (the full part extends the core; a core run on top of a full
    study keeps the full study's outputs)."""
    if _stamp_key(old) == _stamp_key(new):
        return True
    op, np_ = dict(old.get("parameters") or {}), dict(new.get("parameters") or {})
    if op.get("full") is True and np_.get("full") is False:
        op["full"] = False
        return _stamp_key({**old, "parameters": op}) == _stamp_key(new)
    return False


class ProgressEcho:
    """The file papermill writes the notebook's printed output to: passes the study's own lines (``[study]``
    runs starting and finishing, ``[progress]`` the live epoch counts and time left) on to ``stream``, so
    that ``make reproduce`` shows what the training behind a notebook is doing. On a terminal the progress
    line is rewritten in place; otherwise every update is one line."""

    PREFIXES = ("[study]", "[progress]")

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._buf = ""
        self._open_line = False

    def write(self, text: str) -> int:
        self._buf += text
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            if not line.startswith(self.PREFIXES):
                continue
            if self.tty and line.startswith("[progress]"):
                self.stream.write("\r" + line[:160].ljust(160))
                self._open_line = True
            else:
                self.stream.write(("\n" if self._open_line else "") + line + "\n")
                self._open_line = False
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def execute_notebook(src: PathLike, dst: PathLike, parameters: Dict[str, Any], *, cwd: PathLike,
                     kernel_name: str = "python3", echo: Optional[Any] = None) -> Path:
    """Execute notebook ``src`` with papermill into ``dst`` (written only when it succeeds; a failing run is
    kept as ``<dst stem>.failed.ipynb`` and raises :class:`NotebookFailed`). ``echo``: a file that receives
    the notebook's printed output as it runs (e.g. :class:`ProgressEcho`)."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"notebook {src} not found")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.stem}.running.ipynb")
    failed = dst.with_name(f"{dst.stem}.failed.ipynb")
    try:
        pm.execute_notebook(str(src), str(tmp), parameters=parameters, kernel_name=kernel_name, cwd=str(cwd),
                            progress_bar=False, log_output=False, stdout_file=echo)
    except PapermillExecutionError as e:
        if tmp.exists():
            os.replace(tmp, failed)
        raise NotebookFailed(f"{src.name} failed in cell {e.exec_count}: {e.ename}: {e.evalue}\n"
                             f"executed copy with the traceback: {failed}") from None
    except BaseException:
        if tmp.exists():
            os.replace(tmp, failed)
        raise
    os.replace(tmp, dst)
    if failed.exists():
        failed.unlink()
    return dst


def clear_stage_outputs(results_dir: Path, name: str) -> List[Path]:
    """Delete the tables / figures / record that notebook ``name`` wrote earlier (artifact names start with
    its number, e.g. ``02_``), so that renamed or no longer produced outputs do not linger in the README."""
    prefix = name.split("_", 1)[0] + "_"
    removed = []
    for sub in ("tables", "figures", "records"):
        folder = Path(results_dir) / sub
        if folder.is_dir():
            for p in sorted(folder.glob(prefix + "*")):
                if p.is_file() and p.suffix in (".csv", ".md", ".json", ".png"):
                    p.unlink()
                    removed.append(p)
    return removed


#: the preset of the committed study: only its results go to ``results/`` and into the README by default
STUDY_PRESET = "cpu"
STUDY_OUT = "results"


def default_out(preset: str, runs_dir: PathLike = "runs") -> str:
    """Where a preset's study writes by default: ``results/`` for the committed study's preset, else
    ``<runs_dir>/<preset>/results`` (beside its runs), so a smoke run never rewrites the committed study."""
    return STUDY_OUT if preset == STUDY_PRESET else str(Path(runs_dir) / preset / "results")


def default_readme(preset: str, out: PathLike, readme: Optional[PathLike] = "auto") -> Optional[PathLike]:
    """The README whose results section a study refreshes: with ``readme="auto"``, ``README.md`` for the
    committed study (its preset into ``results/``) and none otherwise; an explicit path (or None) as given."""
    if readme != "auto":
        return readme
    return "README.md" if preset == STUDY_PRESET and Path(out) == Path(STUDY_OUT) else None


def reproduce(preset: str = "cpu", dataset: Optional[str] = None, data_root: Optional[str] = None,
              out: Optional[PathLike] = None, runs_dir: PathLike = "runs", *, force: bool = False,
              full: bool = False, epochs: Optional[int] = None, seed: int = 0, jobs: int = 2,
              device: Optional[str] = None, notebooks: Optional[Sequence[str]] = None,
              readme: Optional[PathLike] = "auto",
              kernel_name: str = "python3", cwd: Optional[PathLike] = None,
              parameters: Optional[Dict[str, Any]] = None,
              log: Callable[[str], None] = print, echo: Optional[Any] = None) -> List[Dict[str, Any]]:
    """Execute the study notebooks in order (see the module docstring); returns one dict per notebook
    (name, executed, path, seconds). ``out``: default :func:`default_out` (the committed ``results/`` only for
    the cpu preset); ``readme``: default :func:`default_readme` (``None`` leaves it alone). Paths are relative
    to ``cwd``
    (default: the working directory), where the notebooks' kernels run too. ``parameters``: extra notebook
    parameters (e.g. ``{"target_macs": 0.5}`` for 02, ``{"latency_rounds": 2}`` for 04), given to the
    notebooks whose parameters cell defines them (and part of their stamps); a name no notebook defines is
    an error. ``echo``: where the notebooks' run and progress lines go as they execute (the CLI passes a
    :class:`ProgressEcho` on stdout); ``None`` keeps them in the executed notebooks only."""
    from .methods import get_preset
    from .records import code_version
    from .results import record, render_headline, render_results_page

    cwd = Path(cwd) if cwd is not None else Path.cwd()
    out = default_out(preset, runs_dir) if out is None else out
    readme = default_readme(preset, out, readme)
    names = list(notebooks) if notebooks is not None else list(NOTEBOOKS if full else CORE_NOTEBOOKS)
    unknown = [n for n in names if n not in NOTEBOOKS]
    if unknown:
        raise KeyError(f"unknown notebook(s) {unknown}; valid: {', '.join(NOTEBOOKS)}")
    get_preset(preset)  # clear error for a bad preset before any kernel starts
    kernel_python(kernel_name)
    out_abs = Path(out) if Path(out).is_absolute() else cwd / out
    executed = out_abs / "executed"
    params = {"preset": preset, "dataset": dataset, "data_root": data_root, "device": device, "seed": int(seed),
              "out": str(out), "runs_dir": str(runs_dir), "epochs": epochs, "jobs": int(jobs), "full": bool(full)}
    clash = sorted(set(parameters or {}) & (set(params) | {"force"}))
    if clash:
        raise ValueError(f"reproduce: parameters {clash} have their own arguments")
    declared = {n: notebook_parameters(notebook_dir() / f"{n}.ipynb") for n in names}
    unknown = sorted(set(parameters or {}) - {p for ps in declared.values() for p in ps})
    if unknown:
        raise KeyError(f"reproduce: no selected notebook has parameter(s) {unknown}; they define: "
                       + "; ".join(f"{n}: {', '.join(ps)}" for n, ps in declared.items()))
    force_since = time.time() if force else False
    version = code_version()
    report: List[Dict[str, Any]] = []
    upstream_ran = False
    for name in NOTEBOOKS:
        if name not in names:
            continue
        src = notebook_dir() / f"{name}.ipynb"
        dst = executed / f"{name}.ipynb"
        stamp_path = executed / f"{name}.stamp.json"
        nb_params = {**params, **{k: v for k, v in (parameters or {}).items() if k in declared[name]}}
        stamp = {"notebook": name, "parameters": nb_params, "notebook_sha256": _sha256(src),
                 "code_version": version, "outputs": [f"records/{name}.json"]}
        old = json.loads(stamp_path.read_text()) if stamp_path.is_file() else None
        fresh = (old is not None and not force and not upstream_ran and _covers(old, stamp)
                 and dst.is_file() and all((out_abs / o).is_file() for o in old.get("outputs", [])))
        if fresh:
            note = "" if old.get("code_version") == version else \
                f" (executed with code {old.get('code_version')}, now {version}; --force re-executes)"
            log(f"[reproduce] {name}: up to date, reused{note}")
            report.append({"name": name, "executed": False, "path": str(dst), "seconds": 0.0,
                           "code_version": old.get("code_version")})
            continue
        log(f"[reproduce] {name}: executing -> {dst}")
        removed = clear_stage_outputs(out_abs, name)
        if removed:
            log(f"[reproduce] {name}: removed {len(removed)} earlier output file(s) of this stage")
        t0 = time.time()
        execute_notebook(src, dst, {**nb_params, "force": force_since}, cwd=cwd, kernel_name=kernel_name,
                         echo=echo)
        missing = [o for o in stamp["outputs"] if not (out_abs / o).is_file()]
        if missing:
            raise NotebookFailed(f"{name} ran but did not write {missing} under {out_abs}")
        atomic_write_text(stamp_path, json.dumps(stamp, indent=1, sort_keys=True) + "\n")
        upstream_ran = True
        secs = time.time() - t0
        log(f"[reproduce] {name}: done in {secs:.1f} s")
        report.append({"name": name, "executed": True, "path": str(dst), "seconds": secs, "code_version": version})
    cfg = get_preset(preset)
    record(out_abs, "reproduce", {
        "preset": preset, "dataset": dataset or cfg.data.dataset, "data_root": data_root or cfg.data.root,
        "epochs": epochs if epochs is not None else cfg.optim.epochs, "seed": int(seed), "full": bool(full),
        "notebooks": [r["name"] for r in report], "parameters": dict(parameters or {}),
        "code_version": ", ".join(sorted({str(r["code_version"]) for r in report})),
    })
    changed = render_results_page(out_abs)
    log(f"[reproduce] {out_abs / 'README.md'} {'updated' if changed else 'already up to date'}")
    if readme is not None:
        changed = render_headline(readme if Path(readme).is_absolute() else cwd / readme, out_abs)
        log(f"[reproduce] README headline {'updated' if changed else 'already up to date'}: {readme}")
    return report
