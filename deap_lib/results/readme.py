"""The README's results section, generated from a results folder (:func:`render_readme`; ``--check`` only
compares), and the headline sentence built from the notebooks' records."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union


from ..fileio import atomic_write_text

PathLike = Union[str, "os.PathLike[str]"]


START_MARKER = "<!-- results:start -->"
END_MARKER = "<!-- results:end -->"
#: README group titles per notebook prefix of an artifact name.
STAGES = {"00": "Data", "01": "Teacher and plain student", "02": "The KD + NP dilemma",
          "03": "DEAP training", "04": "Absorption, complexity and speed", "05": "CDD against DEAP",
          "06": "Resolution-aware KD (HR teacher, LR student)",
          "07": "Structure learning by KD under a MACs or parameter budget"}


def has_study(results_dir: PathLike) -> bool:
    """Whether ``results_dir`` holds any table, figure or record."""
    root = Path(results_dir)
    return any(any((root / sub).glob(pat)) for sub, pat in
               (("tables", "*.md"), ("figures", "*.png"), ("records", "*.json")))


def _load_caption(folder: Path, name: str) -> str:
    meta = folder / f"{name}.json"
    if meta.is_file():
        try:
            return str(json.loads(meta.read_text()).get("caption") or name)
        except (ValueError, AttributeError) as e:
            raise ValueError(f"{meta}: not a caption file ({e})") from e
    return name


def _group(name: str) -> str:
    head = name.split("_", 1)[0]
    return head if head.isdigit() else "~"


def notebook_durations(results_dir: PathLike = "results") -> Dict[str, float]:
    """Seconds each executed notebook in ``results_dir/executed/`` took, as papermill recorded it
    (``metadata.papermill.duration``), in notebook order; notebooks without a duration are left out."""
    out: Dict[str, float] = {}
    for nb in sorted((Path(results_dir) / "executed").glob("*.ipynb")):
        try:
            d = json.loads(nb.read_text()).get("metadata", {}).get("papermill", {}).get("duration")
        except ValueError:
            continue
        if isinstance(d, (int, float)) and math.isfinite(d):
            out[nb.stem] = float(d)
    return out


def headline(results_dir: PathLike = "results") -> str:
    """One generated sentence with the study's headline (teacher vs DEAP's absorbed student), from
    ``records/04_absorb_and_plots.json``; empty when that record is missing."""
    path = Path(results_dir) / "records" / "04_absorb_and_plots.json"
    if not path.is_file():
        return ""
    r = json.loads(path.read_text())
    lat = r.get("latency_speedup", {})
    fast = ", ".join(f"{lat[k]:.2f}x at batch {k.split('@')[1]}" for k in sorted(lat, key=lambda k: int(k.split("@")[1]))
                     if k.startswith("absorbed@"))
    text = (f"**Headline.** DEAP's absorbed student removes {r['deap_params_reduction_pct']:.1f} % of the "
            f"teacher's parameters and {r['deap_macs_reduction_pct']:.1f} % of its MACs; its mAP is "
            f"{r['deap_mAP']:.1f} % against the teacher's {r['teacher_mAP']:.1f} % (difference "
            f"{r['deap_d_mAP']:+.1f} points, 95 % paired-bootstrap interval [{r['deap_d_mAP_low']:+.1f}, "
            f"{r['deap_d_mAP_high']:+.1f}]).")
    if fast:
        text += f" CPU latency speed-up over the BN-folded teacher (eager PyTorch): {fast}."
    seeds = Path(results_dir) / "records" / "02_dilemma.json"
    st = json.loads(seeds.read_text()).get("seed_stats") if seeds.is_file() else None
    if st and "deap" in st.get("methods", {}) and "teacher" in st["methods"]:
        d, t = st["methods"]["deap"], st["methods"]["teacher"]
        text += (f" Over seeds {', '.join(map(str, st['seeds']))} (mean ± sample std): DEAP absorbed "
                 f"{d['mAP_mean']:.1f} ± {d['mAP_std']:.1f} % mAP, the teacher {t['mAP_mean']:.1f} ± "
                 f"{t['mAP_std']:.1f} %; DEAP minus the teacher of its seed {d['d_teacher_mean']:+.1f} points "
                 f"(95 % t interval over seeds [{d['d_teacher_ci_low']:+.1f}, {d['d_teacher_ci_high']:+.1f}]).")
        for v in st.get("verdicts", []):
            if v["model"] in ("deap", "kd_slim"):
                text += (f" {v['model']} minus {v['against']} over seeds: {v['mean']:+.1f} points (90 % t interval "
                         f"[{v['ci_low']:+.1f}, {v['ci_high']:+.1f}]): {v['verdict']}.")
    text += _cdd_sentence(Path(results_dir) / "records" / "05_cdd.json")
    return (text + _resolution_sentence(Path(results_dir) / "records" / "06_resolution.json")
            + _structure_sentence(Path(results_dir) / "records" / "07_structure.json"))


def _cdd_sentence(path: Path) -> str:
    """The headline's sentence on notebook 05: CDD and DEAP, each by its own cut, over seeds."""
    c = json.loads(path.read_text()) if path.is_file() else {}
    o = (c.get("over_seeds") or {}).get("DEAP - CDD")
    if not o or len(c.get("seeds", [])) < 2:
        return ""
    kept = {m: sum(c[f"{m}_macs_kept"].values()) / len(c[f"{m}_macs_kept"]) for m in ("cdd", "deap")}
    return (f" Against CDD (its predecessor, notebook 05; each by its own threshold cut, seeds "
            f"{', '.join(map(str, c['seeds']))}): CDD keeps {kept['cdd']:.1%} of its MACs, DEAP {kept['deap']:.1%}; "
            f"DEAP minus CDD {o['mean']:+.1f} points (90 % t interval [{o['ci_low']:+.1f}, {o['ci_high']:+.1f}]; "
            f"{o['verdict']}).")


def _structure_sentence(path: Path) -> str:
    """The headline's sentence on notebook 07: at each budget, structure_kd against DEAP and the thinned
    network (seed, paired bootstrap)."""
    if not path.is_file():
        return ""
    r = json.loads(path.read_text())
    maps = {(x["method"], x.get("budget_kind"), x.get("budget")): x["mAP"] for x in r["sweep"]
            if x.get("rule") in (None, "budget")}  # not the own-cut and imposed-rule points
    parts = []
    for b in sorted(r["budgets"], reverse=True):
        others = [m for m in ("deap", "kd_slim", "thinned_kd") if (m, "macs", b) in maps]
        d = {x["structure_kd vs"]: x for x in r["structure_kd_minus"]
             if x["budget_kind"] == "macs" and x["budget"] == b and x["structure_kd vs"] in others}
        bits = ", ".join(f"{m} {maps[(m, 'macs', b)]:.1f}" for m in ["structure_kd"] + others)
        vs = "; ".join(f"minus {m} {d[m]['d_mAP']:+.1f} [{d[m]['d_low']:+.1f}, {d[m]['d_high']:+.1f}]"
                       for m in others if m in d)
        parts.append(f"at {b:.0%} of the MACs {bits} % ({vs})")
    return (f" Structure learning by KD (notebook 07, seed {r['seed']}, 95 % paired-bootstrap intervals): "
            + "; ".join(parts) + ".")


def _resolution_sentence(path: Path) -> str:
    """The headline's sentence on notebook 06 (crkd against the LR baselines at its comparison scale)."""
    if not path.is_file():
        return ""
    r = json.loads(path.read_text())
    a = r["ablation_scale"]
    text = (f" Resolution-aware KD (notebook 06) at {a:g} of the input side: crkd {r['crkd_mAP']:.1f} % mAP at "
            f"{r['crkd_macs'] / 1e6:.2f} M MACs (the teacher {r['teacher_mAP']:.1f} % at "
            f"{r['teacher_macs'] / 1e6:.2f} M)")
    over = r.get("crkd_vs_lr_baselines_over_seeds") or []
    if over:
        text += "; over seeds " + ", ".join(map(str, r["seeds"])) + ", crkd minus " + "; minus ".join(
            f"{o['vs']} {o['d_mean']:+.1f} points (95 % t interval [{o['d_ci_low']:+.1f}, {o['d_ci_high']:+.1f}]; "
            f"{o['verdict']})" for o in over)
    else:
        text += ", seed " + str(r["seeds"][0]) + ": crkd minus " + "; minus ".join(
            f"{o['vs']} {o['d_mAP']:+.1f} points ([{o['d_low']:+.1f}, {o['d_high']:+.1f}]; {o['verdict']})"
            for o in r.get("crkd_vs_lr_baselines", []))
    return text + "."


def executed_stamps(root: PathLike) -> Dict[str, Dict[str, Any]]:
    """``{notebook: stamp}`` of every executed notebook under ``root/executed`` (its parameters, notebook hash
    and the code version that executed it), in name order."""
    out = {}
    for path in sorted(Path(root, "executed").glob("*.stamp.json")):
        try:
            out[path.name[:-len(".stamp.json")]] = json.loads(path.read_text())
        except ValueError:
            continue
    return out


def results_section(results_dir: PathLike = "results", link_base: PathLike = ".") -> str:
    """The README's generated results section (without markers), built from ``results_dir`` only.
    Links are relative to ``link_base`` (the README's folder). Deterministic: same files -> same text."""
    root = Path(results_dir)
    rel = Path(os.path.relpath(root.resolve(), Path(link_base).resolve())).as_posix()
    pre = "" if rel == "." else f"{rel}/"  # links from the results folder itself: "figures/x.png"
    lines = ["## Results", "",
             "<!-- generated by `python -m deap_lib readme` from the results folder; do not edit by hand -->", ""]
    if not has_study(root):
        lines += [f"No study results yet: `make reproduce` runs the notebooks and fills `{rel}/` and this section.",
                  ""]
        return "\n".join(lines)
    rep = root / "records" / "reproduce.json"
    if rep.is_file():
        r = json.loads(rep.read_text())
        bits = [f"preset `{r.get('preset')}`", f"dataset `{r.get('dataset')}`"]
        if r.get("epochs") is not None:
            bits.append(f"{r['epochs']} epochs")
        bits.append(f"seed {r.get('seed')}")
        bits.append("full study" if r.get("full") else "core study (no ablations)")
        from ..notebooks import PARAMETERS as _RUNNER_PARAMETERS  # injected into every notebook: not named

        stamps = executed_stamps(root)
        if stamps:  # every executed notebook's own code version and extra parameters, however many runs made them
            bits += sorted({f"`{k}={v}`" + f" ({name[:2]})" for name, st in stamps.items()
                            for k, v in (st.get("parameters") or {}).items() if k not in _RUNNER_PARAMETERS})
            by_code: Dict[str, List[str]] = {}
            for name, st in stamps.items():
                by_code.setdefault(str(st.get("code_version")), []).append(name[:2])
            bits.append("code " + ", ".join(f"`{c}` ({', '.join(ns)})" for c, ns in
                                            sorted(by_code.items(), key=lambda kv: kv[1])))
        else:
            bits += [f"`{k}={v}`" for k, v in sorted((r.get("parameters") or {}).items())]
            if r.get("code_version"):
                bits.append(f"code `{r['code_version']}`")
        lines += ["Produced by `python -m deap_lib reproduce`: " + ", ".join(bits) + ". Executed notebooks: "
                  f"[`{pre}executed/`]({pre}executed/); all runs: [`{pre}summary.csv`]({pre}summary.csv).", ""]
    head = headline(root)
    if head:
        lines += [head, ""]
    durations = notebook_durations(root)
    if durations:
        total = sum(durations.values())
        lines += ["Wall time of the executed notebooks (papermill, training included): "
                  + ", ".join(f"{n} {d / 60:.1f} min" for n, d in durations.items())
                  + f"; total {total / 60:.1f} min.", ""]
    tables = {p.stem for p in (root / "tables").glob("*.md")}
    figures = {p.stem for p in (root / "figures").glob("*.png")}
    items = sorted([(n, "table") for n in tables] + [(n, "figure") for n in figures])
    for g in sorted({_group(n) for n, _ in items}):
        lines += [f"### {STAGES.get(g, 'Other')}", ""]
        for name, kind in (it for it in items if _group(it[0]) == g):
            if kind == "table":
                cap = _load_caption(root / "tables", name)
                lines += [f"**{cap}** ([CSV]({pre}tables/{name}.csv))", "",
                          (root / "tables" / f"{name}.md").read_text().rstrip("\n"), ""]
            else:
                cap = _load_caption(root / "figures", name)
                lines += [f"**{cap}**", "", f"![{cap}]({pre}figures/{name}.png)", ""]
    return "\n".join(lines)


def _split_readme(text: str, path: Path, start: str = START_MARKER, end: str = END_MARKER) -> Tuple[str, str, str]:
    what = "results section" if start == START_MARKER else "headline"
    if text.count(start) != 1 or text.count(end) != 1:
        raise ValueError(f"{path}: needs exactly one '{start}' and one '{end}' line around the "
                         f"{what} (found {text.count(start)} and {text.count(end)})")
    a = text.index(start) + len(start)
    b = text.index(end)
    if b < a:
        raise ValueError(f"{path}: '{end}' comes before '{start}'")
    return text[:a], text[a:b], text[b:]


def _replace_between(path: Path, new_body: str, start: str, end: str, check: bool) -> bool:
    head, body, tail = _split_readme(path.read_text(), path, start, end)
    if check:
        return body == new_body
    if body == new_body:
        return False
    atomic_write_text(path, head + new_body + tail)
    return True


def readme_section(readme: PathLike = "README.md") -> str:
    """The current text between the README's results markers."""
    path = Path(readme)
    return _split_readme(path.read_text(), path)[1]


def render_readme(readme: PathLike = "README.md", results_dir: PathLike = "results", *, check: bool = False) -> bool:
    """Regenerate the README's results section (between :data:`START_MARKER` and :data:`END_MARKER`) from
    ``results_dir`` only; idempotent. ``check=True`` writes nothing and returns whether the README is up to
    date; otherwise returns whether the file was changed."""
    path = Path(readme)
    if not path.is_file():
        raise FileNotFoundError(f"render_readme: {path} does not exist")
    return _replace_between(path, "\n" + results_section(results_dir, path.parent) + "\n", START_MARKER, END_MARKER,
                            check)


RESULTS_PAGE = "README.md"


def render_results_page(results_dir: PathLike = "results", *, check: bool = False) -> bool:
    """Regenerate ``<results_dir>/README.md``, every table and figure of the study with its caption (the full
    results section, :func:`results_section`), creating it if missing; ``check`` as :func:`render_readme`."""
    page = Path(results_dir) / RESULTS_PAGE
    if not page.is_file():
        if check:
            return False
        page.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(page, f"# Results\n\n{START_MARKER}\n{END_MARKER}\n")
    return render_readme(page, results_dir, check=check)


HEADLINE_START = "<!-- headline:start -->"
HEADLINE_END = "<!-- headline:end -->"
#: the paper's claim for DEAP (ResNet-101 teacher and student, VeRi-776): parameters and MACs removed
PAPER_CLAIM = {"params_reduction_pct": 73.24, "macs_reduction_pct": 71.98}


def _study_machines(root: Path) -> List[str]:
    summary = root / "summary.csv"
    if not summary.is_file():
        return []
    import pandas as pd

    df = pd.read_csv(summary)
    if "machine" not in df.columns:
        return []
    return sorted({str(m) for m in df["machine"].dropna()})


def headline_table(results_dir: PathLike = "results", link_base: PathLike = ".") -> str:
    """The README's headline, generated from ``results_dir`` only: the paper's claim beside the study's DEAP
    (its absorbed student against its teacher, the paired-bootstrap interval of the difference, from
    ``records/04_absorb_and_plots.json``), the code and machine that produced it, and a link to every table."""
    root = Path(results_dir)
    rel = Path(os.path.relpath(root.resolve(), Path(link_base).resolve())).as_posix()
    rec = root / "records" / "04_absorb_and_plots.json"
    if not rec.is_file():
        return f"No study results yet: `make reproduce` fills `{rel}/` and this table."
    r = json.loads(rec.read_text())
    reproduce = root / "records" / "reproduce.json"
    setup = json.loads(reproduce.read_text()) if reproduce.is_file() else {}
    code = executed_stamps(root).get("04_absorb_and_plots", {}).get("code_version", "not recorded")
    machines = _study_machines(root)
    machine = "; ".join(machines) if machines else "not recorded (runs made before machines were recorded)"
    p = PAPER_CLAIM
    dil = root / "records" / "02_dilemma.json"
    d2 = json.loads(dil.read_text()) if dil.is_file() else {}
    epochs = f" ({d2['teacher_epochs']} epochs)" if "teacher_epochs" in d2 else ""
    lam = f" (lambda {d2['deap_lambda']:g}, threshold cut)" if "deap_lambda" in d2 else ""
    lines = ["| | parameters removed | MACs removed | mAP (%) | minus its teacher (mAP points) |",
             "|---|---:|---:|---:|---|",
             f"| paper: DEAP, ResNet-101 on VeRi-776 | {p['params_reduction_pct']:.2f} % | "
             f"{p['macs_reduction_pct']:.2f} % | | no loss (the paper's claim) |",
             f"| this study: teacher{epochs} | | | {r['teacher_mAP']:.1f} | |",
             f"| this study: DEAP, absorbed{lam} | {r['deap_params_reduction_pct']:.1f} % | "
             f"{r['deap_macs_reduction_pct']:.1f} % | {r['deap_mAP']:.1f} | {r['deap_d_mAP']:+.1f} "
             f"[{r['deap_d_mAP_low']:+.1f}, {r['deap_d_mAP_high']:+.1f}] |"]
    slim = d2.get("methods", {}).get("kd_slim")
    if slim:
        params = f"{slim['params_reduction_pct']:.1f} %" if "params_reduction_pct" in slim else ""
        macs = slim.get("macs_reduction_pct", 100 * (1 - slim["macs_fraction"]))
        lines.append(f"| this study: naive KD + slimming (kd_slim), absorbed | {params} | {macs:.1f} % "
                     f"| {slim['mAP']:.1f} | {slim['d_mAP']:+.1f} [{slim['d_mAP_low']:+.1f}, {slim['d_mAP_high']:+.1f}] |")
    verdicts = [v for v in (d2.get("seed_stats") or {}).get("verdicts", []) if v["against"] == "teacher"
                and v["model"] in ("deap", "kd_slim")]
    lines += [""] + ([f"Over seeds {', '.join(map(str, d2['seed_stats']['seeds']))} (each its own pre-training and "
                      "teacher): " + "; ".join(f"{v['model']} minus its teacher {v['mean']:+.1f} points, 90 % t "
                                              f"interval [{v['ci_low']:+.1f}, {v['ci_high']:+.1f}], "
                                              f"**{v['verdict']}** within ±{v.get('margin', 1.0):g}"
                                              for v in verdicts) + ".", ""] if verdicts else [])
    at = d2.get("at_budget") or {}
    if at and "budget" in d2:
        lines += [f"At DEAP's learned budget ({d2['budget']:.1%} of the MACs; notebook 02, seed {setup.get('seed', '?')}, "
                  "one start, one schedule), DEAP minus each other method (95 % paired-bootstrap interval): "
                  + "; ".join(f"{m} {v['d_mAP']:+.1f} [{v['d_low']:+.1f}, {v['d_high']:+.1f}] ({v['verdict']})"
                              for m, v in sorted(at.items(), key=lambda kv: kv[1]["d_mAP"])) + ".", ""]
    lines += _within_margin_lines(root / "records" / "07_structure.json")
    lines += [
             f"Preset `{setup.get('preset', '?')}`, dataset `{setup.get('dataset', '?')}`, seed {setup.get('seed', '?')}; "
             f"intervals: 95 % paired cluster bootstrap over query identities (test split). Code `{code}`; "
             f"machine: {machine}. Every table and figure: [`{rel}/README.md`]({rel}/README.md).",
             "<!-- generated by `python -m deap_lib readme` from the results folder; do not edit by hand -->"]
    return "\n".join(lines)


def _within_margin_lines(path: Path) -> List[str]:
    """The headline's table of notebook 07's table 07_10: each method's largest MACs reduction whose mAP stays
    within the margin of the teacher, among its budget-sweep and own-cut points."""
    r = json.loads(path.read_text()) if path.is_file() else {}
    w = r.get("within_margin")
    if not w:
        return []
    lines = [f"Largest MACs reduction within {w['margin']:g} mAP point of the teacher (notebook 07, seed {r['seed']}, "
             "test split, 95 % paired-bootstrap interval; the paper: DEAP 71.98 %):", "",
             "| method | MACs removed | how | mAP (%) | minus the teacher |", "|---|---:|---|---:|---|"]
    for x in w["rows"]:
        removed = f"{x['macs_removed']:.1%}" if x["qualifies"] else f"none within (best: {x['macs_removed']:.1%})"
        how = x["rule"] if x["rule"] != "budget" else "cut to the budget"
        lines.append(f"| {x['method']} | {removed} | {how} | {x['mAP']:.1f} | {x['d_teacher']:+.1f} "
                     f"[{x['d_low']:+.1f}, {x['d_high']:+.1f}] |")
    return lines + [""]


def render_headline(readme: PathLike = "README.md", results_dir: PathLike = "results", *,
                    check: bool = False) -> bool:
    """Regenerate the README's headline (between :data:`HEADLINE_START` and :data:`HEADLINE_END`) from
    ``results_dir`` only; ``check`` as :func:`render_readme`."""
    path = Path(readme)
    if not path.is_file():
        raise FileNotFoundError(f"render_headline: {path} does not exist")
    return _replace_between(path, "\n" + headline_table(results_dir, path.parent) + "\n", HEADLINE_START,
                            HEADLINE_END, check)
