"""deap_lib.study (run orchestration) and deap_lib.results (records, tables, figures, main table, README).

Training subprocesses are replaced by tiny Python scripts here (the real CLI runs in test_notebooks.py),
except for the check that the CLI rebuilds exactly the config the Study computed.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from deap_lib import results as R
from deap_lib.methods.runner import resolve_runtime
from deap_lib.study import RunFailed, Study, deployed_form, macs_kept, make_tag, summary_rows

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ results
def test_record_roundtrip_and_types(tmp_path):
    p = R.record(tmp_path, "01_x", {"a": np.float32(1.5), "b": np.int64(3), "c": [np.bool_(True), None, "s"],
                                    "d": {"e": np.arange(3)}})
    assert p == tmp_path / "records" / "01_x.json"
    assert json.loads(p.read_text()) == {"a": 1.5, "b": 3, "c": [True, None, "s"], "d": {"e": [0, 1, 2]}}
    assert R.load_record(tmp_path, "01_x")["b"] == 3
    assert [q.name for q in (tmp_path / "records").iterdir()] == ["01_x.json"]  # no temp files left


def test_record_rejects_nonfinite_and_keeps_old_file(tmp_path):
    R.record(tmp_path, "r", {"v": 1.0})
    with pytest.raises(ValueError, match=r"r\.inner\.v.*finite"):
        R.record(tmp_path, "r", {"inner": {"v": float("nan")}})
    with pytest.raises(TypeError, match="set"):
        R.record(tmp_path, "r", {"v": {1, 2}})
    with pytest.raises(ValueError, match="artifact name"):
        R.record(tmp_path, "../evil", {"v": 1})
    assert R.load_record(tmp_path, "r") == {"v": 1.0}


def test_record_atomic_when_replace_fails(tmp_path, monkeypatch):
    R.record(tmp_path, "r", {"v": 1})

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        R.record(tmp_path, "r", {"v": 2})
    monkeypatch.undo()
    assert R.load_record(tmp_path, "r") == {"v": 1}
    assert sorted(q.name for q in (tmp_path / "records").iterdir()) == ["r.json"]


def test_to_markdown_hand_written():
    df = pd.DataFrame({"model": ["a|b", "c"], "mAP": [1.234, 20.0], "ci": ["1.0 [0.5, 2.0]", "-3.0 [-4.0, 1.0]"],
                       "ok": [True, False]})
    want = ("| model | mAP | ci | ok |\n"
            "|---|---:|---:|---|\n"
            "| a\\|b | 1.23 | 1.0 [0.5, 2.0] | yes |\n"
            "| c | 20.00 | -3.0 [-4.0, 1.0] | no |\n")
    assert R.to_markdown(df) == want


def test_save_table_and_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = pd.DataFrame({"split": ["train", "query"], "ids": [8, 6]})
    csv, md = R.save_table(df, tmp_path, "00_1_stats", caption="Stats")
    assert csv.read_text() == "split,ids\ntrain,8\nquery,6\n"
    assert md.read_text() == "| split | ids |\n|---|---:|\n| train | 8 |\n| query | 6 |\n"
    assert json.loads((tmp_path / "tables" / "00_1_stats.json").read_text()) == {"caption": "Stats"}
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png = R.save_figure(fig, tmp_path, "00_2_fig", caption="A figure")
    plt.close(fig)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(TypeError, match="DataFrame"):
        R.save_table([1, 2], tmp_path, "bad")
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


# ------------------------------------------------------------------------------------------------ README
def _readme(tmp_path, body="old"):
    p = tmp_path / "README.md"
    p.write_text(f"# Title\n\nintro\n\n{R.START_MARKER}\n{body}\n{R.END_MARKER}\n\n## After\n")
    return p


def test_render_readme_idempotent_and_check(tmp_path):
    res = tmp_path / "results"
    readme = _readme(tmp_path)
    assert R.render_readme(readme, res, check=True) is False
    assert R.render_readme(readme, res) is True  # placeholder written
    assert "No study results yet" in readme.read_text()
    R.save_table(pd.DataFrame({"m": ["deap"], "mAP": [50.0]}), res, "04_1_main", caption="Main table")
    R.save_table(pd.DataFrame({"s": ["train"], "n": [3]}), res, "00_1_stats", caption="Stats")
    (res / "figures").mkdir()
    (res / "figures" / "02_2_bar.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # a figure without caption file
    assert R.render_readme(readme, res, check=True) is False
    assert R.render_readme(readme, res) is True
    text = readme.read_text()
    assert R.render_readme(readme, res) is False and readme.read_text() == text  # idempotent
    assert R.render_readme(readme, res, check=True) is True
    assert text.startswith("# Title\n\nintro\n\n") and text.endswith(f"{R.END_MARKER}\n\n## After\n")
    # groups in notebook order, links relative to the README, tables verbatim
    assert text.index("### Data") < text.index("### The KD + NP dilemma") < text.index("### Absorption")
    assert "**Stats** ([CSV](results/tables/00_1_stats.csv))\n\n| s | n |\n|---|---:|\n| train | 3 |\n" in text
    assert "![02_2_bar](results/figures/02_2_bar.png)" in text
    assert "No study results yet" not in text
    R.save_table(pd.DataFrame({"m": ["deap"], "mAP": [51.0]}), res, "04_1_main", caption="Main table")
    assert R.render_readme(readme, res, check=True) is False
    # wall times come from papermill's record in the executed notebooks
    (res / "executed").mkdir()
    for name, d in (("00_data", 30.0), ("01_teacher", 600.0)):
        (res / "executed" / f"{name}.ipynb").write_text(json.dumps({"metadata": {"papermill": {"duration": d}}}))
    (res / "executed" / "02_dilemma.ipynb").write_text(json.dumps({"metadata": {}}))  # no duration: left out
    assert R.notebook_durations(res) == {"00_data": 30.0, "01_teacher": 600.0}
    R.render_readme(readme, res)
    assert "00_data 0.5 min, 01_teacher 10.0 min; total 10.5 min." in readme.read_text()
    assert R.headline(res) == "" and "**Headline.**" not in readme.read_text()
    R.record(res, "04_absorb_and_plots", {
        "deap_params_reduction_pct": 74.44, "deap_macs_reduction_pct": 73.18, "deap_mAP": 46.33, "teacher_mAP": 63.04,
        "deap_d_mAP": -16.71, "deap_d_mAP_low": -18.9, "deap_d_mAP_high": -14.46,
        "latency_speedup": {"absorbed@16": 2.5, "absorbed@1": 1.75, "teacher@1": 1.0}})
    R.render_readme(readme, res)
    assert ("**Headline.** DEAP's absorbed student removes 74.4 % of the teacher's parameters and 73.2 % of its "
            "MACs; its mAP is 46.3 % against the teacher's 63.0 % (difference -16.7 points, 95 % paired-bootstrap "
            "interval [-18.9, -14.5]). CPU latency speed-up over the BN-folded teacher (eager PyTorch): 1.75x at batch 1, 2.50x at batch 16."
            in readme.read_text())
    # with the full study's seed statistics (notebook 02's record) the headline adds them and the verdicts
    R.record(res, "02_dilemma", {"seed_stats": {
        "seeds": [0, 1, 2],
        "methods": {"deap": {"mAP_mean": 46.04, "mAP_std": 0.62, "d_teacher_mean": -16.94, "d_teacher_ci_low": -19.1,
                             "d_teacher_ci_high": -14.8},
                    "teacher": {"mAP_mean": 62.98, "mAP_std": 0.4}},
        "verdicts": [{"model": "deap", "against": "teacher", "mean": -0.52, "ci_low": -1.21, "ci_high": 0.17,
                      "verdict": "inconclusive"},
                     {"model": "kd", "against": "teacher", "mean": 1.5, "ci_low": 1.0, "ci_high": 2.0,
                      "verdict": "better"}]}})
    assert R.headline(res).endswith(
        " Over seeds 0, 1, 2 (mean ± sample std): DEAP absorbed 46.0 ± 0.6 % mAP, the teacher 63.0 ± 0.4 %; DEAP minus "
        "the teacher of its seed -16.9 points (95 % t interval over seeds [-19.1, -14.8]). deap minus teacher over "
        "seeds: -0.5 points (90 % t interval [-1.2, +0.2]): inconclusive.")
    # and notebook 05's CDD comparison over seeds
    R.record(res, "05_cdd", {"seeds": [0, 1, 2], "cdd_macs_kept": {"0": 0.6, "1": 0.7, "2": 0.65},
                             "deap_macs_kept": {"0": 0.5, "1": 0.5, "2": 0.53},
                             "over_seeds": {"DEAP - CDD": {"mean": 7.26, "ci_low": 4.1, "ci_high": 10.44,
                                                           "verdict": "better"}}})
    assert R.headline(res).endswith(
        "inconclusive. Against CDD (its predecessor, notebook 05; each by its own threshold cut, seeds 0, 1, 2): "
        "CDD keeps 65.0% of its MACs, DEAP 51.0%; DEAP minus CDD +7.3 points (90 % t interval [+4.1, +10.4]; "
        "better).")
    R.record(res, "06_resolution", {"ablation_scale": 0.5, "seeds": [0, 1], "crkd_mAP": 61.23, "crkd_macs": 8.9e6,
                                    "teacher_mAP": 82.2, "teacher_macs": 34.58e6, "crkd_vs_lr_baselines_over_seeds": [
                                        {"vs": "LR student", "d_mean": 3.04, "d_ci_low": 1.0, "d_ci_high": 5.0,
                                         "verdict": "crkd better"},
                                        {"vs": "LR logit KD", "d_mean": -0.5, "d_ci_low": -2.0, "d_ci_high": 1.0,
                                         "verdict": "no clear difference"}]})
    assert R.headline(res).endswith(
        "better). Resolution-aware KD (notebook 06) at 0.5 of the input side: crkd 61.2 % mAP at 8.90 M MACs "
        "(the teacher 82.2 % at 34.58 M); over seeds 0, 1, crkd minus LR student +3.0 points (95 % t interval "
        "[+1.0, +5.0]; crkd better); minus LR logit KD -0.5 points (95 % t interval [-2.0, +1.0]; no clear "
        "difference).")
    R.record(res, "07_structure", {"seed": 0, "budgets": [0.28], "sweep": [
        {"method": "teacher", "budget_kind": None, "budget": None, "mAP": 81.0},
        {"method": "structure_kd", "budget_kind": "macs", "budget": 0.28, "mAP": 66.71},
        {"method": "deap", "budget_kind": "macs", "budget": 0.28, "mAP": 71.0},
        {"method": "thinned_kd", "budget_kind": "macs", "budget": 0.28, "mAP": 77.84}], "structure_kd_minus": [
        {"structure_kd vs": "deap", "d_mAP": -4.29, "d_low": -6.0, "d_high": -2.5, "budget_kind": "macs", "budget": 0.28},
        {"structure_kd vs": "thinned_kd", "d_mAP": -11.13, "d_low": -13.0, "d_high": -9.2, "budget_kind": "macs",
         "budget": 0.28},
        {"structure_kd vs": "thinned_kd", "d_mAP": 1.0, "d_low": 0.0, "d_high": 2.0, "budget_kind": "params",
         "budget": 0.28}]})
    assert R.headline(res).endswith(
        "no clear difference). Structure learning by KD (notebook 07, seed 0, 95 % paired-bootstrap intervals): at "
        "28% of the MACs structure_kd 66.7, deap 71.0, thinned_kd 77.8 % (minus deap -4.3 [-6.0, -2.5]; minus "
        "thinned_kd -11.1 [-13.0, -9.2]).")


def test_render_readme_needs_markers(tmp_path):
    p = tmp_path / "README.md"
    p.write_text("# no markers\n")
    with pytest.raises(ValueError, match="README.md.*results:start"):
        R.render_readme(p, tmp_path / "results")
    p.write_text(f"{R.END_MARKER}\n{R.START_MARKER}\n")
    with pytest.raises(ValueError, match="before"):
        R.render_readme(p, tmp_path / "results")


def test_committed_readme_has_markers_and_stays_short():
    text = (REPO / "README.md").read_text()
    assert text.count(R.HEADLINE_START) == 1 and text.count(R.HEADLINE_END) == 1
    assert len(text.splitlines()) <= 150


def test_committed_readme_and_results_page_match_committed_results():
    results = REPO / "results"
    if not R.has_study(results):
        pytest.skip("results/ holds no study yet (no tables, figures or records); `make reproduce` makes one")
    assert R.render_results_page(results, check=True), \
        "results/README.md differs from results/: run `python -m deap_lib readme`"
    assert R.render_headline(REPO / "README.md", results, check=True), \
        "README.md's headline differs from results/: run `python -m deap_lib readme`"


def _headline_readme(tmp_path):
    p = tmp_path / "README.md"
    p.write_text(f"# T\n\n{R.HEADLINE_START}\nold\n{R.HEADLINE_END}\n\nrest\n")
    return p


def test_readme_cli_check(tmp_path):
    from deap_lib.__main__ import main

    readme = _headline_readme(tmp_path)
    res = tmp_path / "results"
    assert main(["readme", "--readme", str(readme), "--results", str(res), "--check"]) == 1
    assert main(["readme", "--readme", str(readme), "--results", str(res)]) == 0
    assert main(["readme", "--readme", str(readme), "--results", str(res), "--check"]) == 0
    assert (res / "README.md").read_text().startswith(f"# Results\n\n{R.START_MARKER}\n")


def test_the_headline_table_from_a_hand_made_record(tmp_path):
    res = tmp_path / "results"
    readme = _headline_readme(tmp_path)
    R.render_headline(readme, res)
    assert "No study results yet" in readme.read_text()
    R.record(res, "04_absorb_and_plots", {"teacher_mAP": 82.25, "deap_mAP": 71.3, "deap_params_reduction_pct": 70.04,
                                          "deap_macs_reduction_pct": 72.0, "deap_d_mAP": -10.95,
                                          "deap_d_mAP_low": -12.04, "deap_d_mAP_high": -9.86})
    R.record(res, "reproduce", {"preset": "cpu", "dataset": "veri", "seed": 0})
    pd.DataFrame({"run": ["deap-s0"], "machine": ["X x2 | torch 2 | 1 thread | bf16"]}).to_csv(res / "summary.csv")
    assert R.render_headline(readme, res) is True and R.render_headline(readme, res, check=True)
    text = readme.read_text()
    assert "| paper: DEAP, ResNet-101 on VeRi-776 | 73.24 % | 71.98 % |" in text
    assert "| this study: teacher | | | 82.2 | |" in text  # (82.25 is 82.2499... in binary)
    assert "| this study: DEAP, absorbed | 70.0 % | 72.0 % | 71.3 | -10.9 [-12.0, -9.9] |" in text
    assert "machine: X x2 | torch 2 | 1 thread | bf16" in text and "[`results/README.md`](results/README.md)" in text
    assert text.startswith(f"# T\n\n{R.HEADLINE_START}\n") and text.endswith(f"{R.HEADLINE_END}\n\nrest\n")
    # notebook 02's record adds the schedule, DEAP's lambda, the naive arm and the equivalence verdicts
    R.record(res, "02_dilemma", {"teacher_epochs": 40, "deap_lambda": 0.01, "methods": {"kd_slim": {
        "macs_fraction": 0.6, "mAP": 72.04, "d_mAP": -2.5, "d_mAP_low": -3.4, "d_mAP_high": -1.6,
        "params_reduction_pct": 45.0, "macs_reduction_pct": 40.0}},
        "seed_stats": {"seeds": [0, 1, 2], "verdicts": [
            {"model": "deap", "against": "teacher", "mean": -0.31, "ci_low": -0.9, "ci_high": 0.3, "verdict": "equivalent"},
            {"model": "deap", "against": "kd", "mean": -2.0, "ci_low": -3.0, "ci_high": -1.0, "verdict": "worse"}]}})
    R.render_headline(readme, res)
    text = readme.read_text()
    assert "| this study: teacher (40 epochs) | | | 82.2 | |" in text
    assert "| this study: DEAP, absorbed (lambda 0.01, threshold cut) | 70.0 % | 72.0 % | 71.3 |" in text
    assert "| this study: naive KD + slimming (kd_slim), absorbed | 45.0 % | 40.0 % | 72.0 | -2.5 [-3.4, -1.6] |" in text
    assert ("Over seeds 0, 1, 2 (each its own pre-training and teacher): deap minus its teacher -0.3 points, 90 % t "
            "interval [-0.9, +0.3], **equivalent** within ±1.") in text and "minus kd" not in text
    # notebook 02's equal-MACs comparisons, in the record's own method names
    R.record(res, "02_dilemma", {"budget": 0.4978, "at_budget": {
        "thinned_kd": {"d_mAP": -1.56, "d_low": -2.21, "d_high": -0.84, "verdict": "DEAP worse"},
        "np": {"d_mAP": 15.58, "d_low": 13.85, "d_high": 17.3, "verdict": "DEAP better"}}})
    R.render_headline(readme, res)
    assert ("At DEAP's learned budget (49.8% of the MACs; notebook 02, seed 0, one start, one schedule), DEAP minus "
            "each other method (95 % paired-bootstrap interval): thinned_kd -1.6 [-2.2, -0.8] (DEAP worse); np +15.6 "
            "[+13.8, +17.3] (DEAP better).") in readme.read_text()
    # notebook 07's table 07_10: each method's largest MACs reduction within the margin of the teacher
    R.record(res, "07_structure", {"seed": 0, "within_margin": {"margin": 1.0, "rows": [
        {"method": "deap", "qualifies": True, "rule": "own cut, lambda=0.01", "macs_removed": 0.517, "mAP": 74.1,
         "d_teacher": -0.4, "d_low": -1.3, "d_high": 0.5},
        {"method": "thinned_kd", "qualifies": False, "rule": "budget", "macs_removed": 0.5, "mAP": 70.0,
         "d_teacher": -4.5, "d_low": -5.5, "d_high": -3.5}]}})
    R.render_headline(readme, res)
    text = readme.read_text()
    assert "| deap | 51.7% | own cut, lambda=0.01 | 74.1 | -0.4 [-1.3, +0.5] |" in text
    assert "| thinned_kd | none within (best: 50.0%) | cut to the budget | 70.0 | -4.5 [-5.5, -3.5] |" in text


# ------------------------------------------------------------------------------------------------ main table
def _per_query(ap, pids):
    n = len(ap)
    return {"ap": np.asarray(ap, float), "inp": np.asarray(ap, float), "first_hit": np.zeros(n, int),
            "valid": np.ones(n, bool), "q_pids": np.asarray(pids, int)}


def _fake_run(root, name, method, forms, *, seed=0, per_query=None, extra=None):
    d = root / name
    d.mkdir(parents=True)
    m = {"run": name, "method": method, "preset": "quick", "dataset": "veri", "seed": seed, "config": {},
         "wall_time_s": 1.0, "forms": forms, **(extra or {})}
    (d / "metrics.json").write_text(json.dumps(m))
    for form, pq in (per_query or {}).items():
        np.savez(d / f"per_query_{form}.npz", **pq)
    return d


def _form(mAP, params, macs, rank1=50.0):
    return {"mAP": mAP, "mAP_low": mAP - 5, "mAP_high": mAP + 5, "mAP_text": f"{mAP:.1f}", "rank1": rank1,
            "rank5": 80.0, "rank10": 90.0, "mINP": 10.0, "params": params + 100, "params_no_classifier": params,
            "macs": macs}


def test_main_table_hand_computed(tmp_path):
    runs = tmp_path / "runs" / "quick"
    pids = [1, 1, 2, 3]
    _fake_run(runs, "teacher-s0", "teacher", {"teacher": _form(50.0, 1_000_000, 400_000_000)},
              per_query={"teacher": _per_query([0.5, 0.7, 0.2, 0.6], pids)})
    _fake_run(runs, "deap-s0", "deap", {"unpruned": _form(48.0, 1_000_000, 400_000_000),
                                         "absorbed": _form(49.0, 250_000, 100_000_000)},
              per_query={"absorbed": _per_query([0.4, 0.9, 0.1, 0.6], pids)})
    _fake_run(runs, "kd-s0", "kd", {"student": _form(45.0, 1_000_000, 400_000_000)},
              per_query={"student": _per_query([0.5, 0.7, 0.2, 0.2], pids)})
    df = Study("quick", runs_dir=tmp_path / "runs", verbose=False).load_runs()
    assert set(df.loc[df["deployed"], "form"]) == {"teacher", "absorbed", "student"}
    t = R.main_table(df, n_boot=200)
    assert list(t["method"]) == ["teacher", "deap", "kd"]
    deap = t.iloc[1]
    assert deap["params_reduction_pct"] == pytest.approx(75.0)
    assert deap["macs_reduction_pct"] == pytest.approx(75.0)
    assert deap["params_m"] == pytest.approx(0.25) and deap["macs_m"] == pytest.approx(100.0)
    # point difference of the means of per-query AP, in points: (0.5 - 0.5) / 4 ... by hand
    assert deap["d_mAP"] == pytest.approx(100 * (np.mean([0.4, 0.9, 0.1, 0.6]) - np.mean([0.5, 0.7, 0.2, 0.6])))
    assert t.iloc[2]["d_mAP"] == pytest.approx(100 * (0.4 - 0.5))
    assert deap["d_mAP_low"] <= deap["d_mAP"] <= deap["d_mAP_high"]
    assert t.iloc[0]["d_mAP"] == 0.0 and t.iloc[0]["run"] == t.iloc[0]["reference"]
    view = R.format_main_table(t)
    assert view.iloc[0]["mAP vs teacher (pp) [95% CI]"] == "reference"
    assert view.iloc[1]["params -%"] == "75.0"


def test_main_table_compares_each_backbone_with_its_own_teacher(tmp_path):
    """Two teachers of seed 0 (the preset's ResNet and a MobileNetV2, notebook 07): each student is compared
    with the teacher of its own architecture, whichever sorts first."""
    runs = tmp_path / "runs" / "quick"
    pids = [1, 2, 3, 4]
    mnv2 = {"config": {"model": {"arch": "mobilenet_v2", "width": 0.5}}}
    resnet = {"config": {"model": {"arch": "resnet50", "width": 0.0625}}}
    _fake_run(runs, "teacher-archmobilenet_v2_width0.5-s0", "teacher", {"teacher": _form(40.0, 800, 80)},
              per_query={"teacher": _per_query([0.4, 0.4, 0.4, 0.4], pids)}, extra=mnv2)
    _fake_run(runs, "teacher-s0", "teacher", {"teacher": _form(60.0, 1000, 100)},
              per_query={"teacher": _per_query([0.6, 0.6, 0.6, 0.6], pids)}, extra=resnet)
    for name, ex in (("kd-archmobilenet_v2_width0.5-s0", mnv2), ("kd-s0", resnet)):
        _fake_run(runs, name, "kd", {"student": _form(50.0, 400, 40)},
                  per_query={"student": _per_query([0.5, 0.5, 0.5, 0.5], pids)}, extra=ex)
    t = R.main_table(Study("quick", runs_dir=tmp_path / "runs", verbose=False).load_runs(), n_boot=50).set_index("run")
    assert t.loc["kd-s0", "reference"] == "teacher-s0" and t.loc["kd-s0", "d_mAP"] == pytest.approx(-10.0)
    assert t.loc["kd-archmobilenet_v2_width0.5-s0", "reference"] == "teacher-archmobilenet_v2_width0.5-s0"
    assert t.loc["kd-archmobilenet_v2_width0.5-s0", "d_mAP"] == pytest.approx(10.0)
    assert t.loc["kd-archmobilenet_v2_width0.5-s0", "params_reduction_pct"] == pytest.approx(50.0)


def test_main_table_errors(tmp_path):
    with pytest.raises(KeyError, match="lacks columns"):
        R.main_table(pd.DataFrame({"run": []}))
    runs = tmp_path / "runs" / "quick"
    _fake_run(runs, "kd-s0", "kd", {"student": _form(45.0, 1, 1)})
    df = Study("quick", runs_dir=tmp_path / "runs", verbose=False).load_runs()
    with pytest.raises(ValueError, match="no teacher"):
        R.main_table(df)


def _seed_runs(tmp_path):
    runs = tmp_path / "runs" / "quick"
    for seed, (t, d, k) in enumerate([(60.0, 50.0, 52.0), (62.0, 53.0, 51.0), (64.0, 47.0, 50.0)]):
        _fake_run(runs, f"teacher-s{seed}", "teacher", {"teacher": _form(t, 1_000_000, 400, rank1=70 + seed)},
                  seed=seed)
        _fake_run(runs, f"deap-s{seed}", "deap", {"unpruned": _form(99.0, 1_000_000, 400),
                                                   "absorbed": _form(d, 250_000, 100, rank1=60 + 2 * seed)},
                  seed=seed)
        _fake_run(runs, f"kd-s{seed}", "kd", {"student": _form(k, 1_000_000, 400)}, seed=seed)
    # a tagged variant (an ablation) of seed 0: a second deap run of that seed
    _fake_run(runs, "deap-kl_weight0.0-s0", "deap", {"absorbed": _form(10.0, 250_000, 100)})
    df = Study("quick", runs_dir=tmp_path / "runs", verbose=False).load_runs()
    with pytest.raises(ValueError, match="several runs of one method and seed.*deap-kl_weight0.0-s0, deap-s0"):
        R.seed_summary(df)
    with pytest.raises(ValueError, match="several runs"):
        R.seed_differences(df)
    return df[df["tag"] == ""]


def test_seed_summary_hand_computed(tmp_path):
    df = _seed_runs(tmp_path)
    t = R.seed_summary(df).set_index("method")
    assert list(t.index) == ["teacher", "deap", "kd"]
    d = t.loc["deap"]
    assert d["form"] == "absorbed" and d["n_seeds"] == 3 and d["seeds"] == "0 1 2"
    # deap mAP 50, 53, 47: mean 50, sample std 3, t(0.975, 2) = 4.302653 -> half width 4.302653 * 3 / sqrt(3)
    assert d["mAP_mean"] == pytest.approx(50.0) and d["mAP_std"] == pytest.approx(3.0)
    half = 4.302652729911275 * 3.0 / math.sqrt(3.0)
    assert d["mAP_ci_low"] == pytest.approx(50.0 - half) and d["mAP_ci_high"] == pytest.approx(50.0 + half)
    assert d["rank1_mean"] == pytest.approx(62.0) and d["rank1_std"] == pytest.approx(2.0)
    assert d["params_m"] == pytest.approx(0.25) and d["macs_m"] == pytest.approx(1e-4)
    # against the teacher of the same seed: -10, -9, -17 -> mean -12, std sqrt(((2)^2 + 3^2 + 5^2) / 2) = sqrt(19)
    assert d["d_teacher_mean"] == pytest.approx(-12.0) and d["d_teacher_std"] == pytest.approx(math.sqrt(19.0))
    assert t.loc["teacher", "d_teacher_mean"] == 0.0 and t.loc["teacher", "mAP_std"] == pytest.approx(2.0)
    view = R.format_seed_summary(t.reset_index())
    assert view.iloc[1]["mAP % mean ± std"] == "50.0 ± 3.0"
    assert view.iloc[0]["vs same-seed teacher (pp) mean ± std"] == "reference"
    assert view.iloc[1]["mAP 95% CI of the mean"] == f"[{50 - half:.1f}, {50 + half:.1f}]"
    one = R.seed_summary(df[df["seed"] == 0])  # one seed: no spread, no interval (NaN, not 0)
    assert one["n_seeds"].tolist() == [1, 1, 1] and one["mAP_std"].isna().all()
    assert R.format_seed_summary(one).iloc[1]["mAP % mean ± std"] == "50.0"


def test_seed_differences_hand_computed(tmp_path):
    df = _seed_runs(tmp_path)
    t = R.seed_differences(df, "deap").set_index("vs")
    assert list(t.index) == ["kd", "teacher"]
    kd = t.loc["kd"]  # 50-52, 53-51, 47-50 = -2, +2, -3
    assert kd["per_seed"] == "-2.0 +2.0 -3.0" and kd["wins"] == 1 and kd["n_seeds"] == 3
    assert kd["d_mean"] == pytest.approx(-1.0) and kd["d_std"] == pytest.approx(math.sqrt(7.0))
    assert kd["d_ci_low"] < kd["d_mean"] < kd["d_ci_high"]


def test_seed_summary_errors(tmp_path):
    df = _seed_runs(tmp_path)
    with pytest.raises(KeyError, match="lacks columns"):
        R.seed_summary(pd.DataFrame({"method": []}))
    with pytest.raises(KeyError, match="np.*methods found: deap, kd, teacher"):
        R.seed_summary(df, methods=["teacher", "np"])
    with pytest.raises(ValueError, match="level"):
        R.seed_summary(df, level=95)
    with pytest.raises(KeyError, match="no runs of 'np'"):
        R.seed_differences(df, "np")


# ------------------------------------------------------------------------------------------------ study
def test_make_tag_and_run_dirs(tmp_path):
    assert make_tag({}) == ""
    assert make_tag({"prune.target_macs": 0.3}) == "target_macs0.3"
    assert make_tag({"loss.kl_weight": 0.0, "prune.proximal": True}) == "kl_weight0.0_proximalTrue"
    long = make_tag({f"loss.k{i}": "x" * 10 for i in range(6)})
    assert len(long) <= 48 and long != make_tag({f"loss.k{i}": "y" * 10 for i in range(6)})
    s = Study("quick", runs_dir=tmp_path / "runs", seed=3, verbose=False)
    assert s.run_dir("deap") == tmp_path / "runs" / "quick" / "deap-s3"
    assert s.run_dir("deap", 1, {"prune.target_macs": 0.3}).name == "deap-target_macs0.3-s1"
    assert s.run_dir("np", 0, {"prune.target_macs": 0.3}, tag="budget").name == "np-budget-s0"
    # overrides that leave the config as the preset makes it name the same run (reused, not duplicated)
    assert s.run_dir("deap", 3, {"prune.target_macs": None, "optim.lr": 0.05}).name == "deap-s3"
    assert s.spec("deap", 3, {"optim.lr": 0.05, "optim.momentum": 0.5}).overrides == (("optim.momentum", 0.5),)
    with pytest.raises(KeyError, match="deap"):
        s.run_dir("no_such_method")
    with pytest.raises(KeyError, match="unknown config key"):
        Study("quick", overrides={"optim.nope": 1})


def test_study_config(tmp_path):
    s = Study("quick", runs_dir="runs", epochs=3, verbose=False)
    kd = s.config("kd", 2)
    assert kd.optim.epochs == 3 and kd.seed == 2 and kd.eval_every == 1
    assert kd.teacher_path == str(Path("runs") / "quick" / "teacher-s2" / "model.pt")
    assert s.config("np").teacher_path is None
    assert s.config("deap", 0, {"prune.target_macs": 0.3}).prune.target_macs == 0.3
    cpu = Study("cpu", verbose=False)
    assert cpu.config("deap").eval_every == 8  # 40 epochs: evaluations at 8, 16, ..., 40
    assert cpu.config("teacher").optim.epochs == cpu.config("deap").optim.epochs == 40  # one schedule
    assert cpu.config("deap", 2).pretrained_path == str(Path("runs") / "cpu" / "pretrain-s2" / "model.pt")
    assert cpu.config("pretrain", 2).data.val_root == ""  # its own corpus, no benchmark validation split
    # data roots: preset's / new folder (generated there) / existing other folder (read as is)
    assert s.config("teacher").data.synthetic == "tiny"
    new = Study("quick", data_root=tmp_path / "new", verbose=False).config("teacher").data
    assert (new.root, new.synthetic) == (str(tmp_path / "new"), "tiny")
    (tmp_path / "real").mkdir()
    real = Study("quick", data_root=tmp_path / "real", verbose=False).config("teacher").data
    assert real.synthetic == ""
    real_cpu = Study("cpu", data_root=tmp_path / "real", verbose=False).config("teacher").data
    assert (real_cpu.synthetic, real_cpu.val_root) == ("", "")  # the generated validation set is not theirs


def test_cli_builds_the_study_config(tmp_path, monkeypatch):
    """The subprocess command, parsed by the real CLI, yields exactly the config the Study compares with."""
    import deap_lib.methods as methods
    from deap_lib.__main__ import main
    from deap_lib.config import config_diff
    from deap_lib.study import _Job

    seen = {}

    def fake_run(cfg, out, **kw):
        seen["cfg"], seen["out"], seen["kw"] = cfg, out, kw
        return {"forms": {}}

    monkeypatch.setattr(methods, "run", fake_run)
    s = Study("quick", data_root=tmp_path / "d", runs_dir=tmp_path / "runs", epochs=2, device="cpu", verbose=False,
              overrides={"loss.kl_T": 3.0})
    spec = s.spec("kd_then_np", 1, {"prune.target_macs": 0.25, "prune.proximal": True, "model.input_size": [32, 32]})
    job = _Job(spec, s.config(spec), s.run_dir(spec))
    cmd = s._command(job, fresh=False)
    assert cmd[:3] == [sys.executable, "-m", "deap_lib"] and "--threads" in cmd and "--no-progress" in cmd
    assert main(cmd[3:]) == 0
    assert config_diff(seen["cfg"].to_dict(), job.cfg.to_dict()) == {}
    assert seen["kw"]["resume"] is True and seen["kw"]["summary_csv"] is None
    assert Path(seen["out"]) == job.run_dir


# --- fake training subprocesses: a tiny script writes metrics.json with the study's config
FAKE = r"""
import json, sys, time
t_start = time.time()
out, cfg_path, mode = sys.argv[1], sys.argv[2], sys.argv[3]
cfg, runtime = json.load(open(cfg_path))
print("training", out, flush=True)
time.sleep(0.3)
if mode == "fail":
    print("boom: something broke", flush=True)
    sys.exit(3)
forms = {"absorbed" if mode == "prune" else "student": {"mAP": 40.0, "mAP_low": 30.0, "mAP_high": 50.0,
         "mAP_text": "40.0 [30.0, 50.0]", "rank1": 50.0, "rank5": 60.0, "rank10": 70.0, "mINP": 5.0,
         "params": 1100, "params_no_classifier": 1000, "macs": 2000000}}
name = out.rstrip("/").split("/")[-1]
json.dump({"run": name, "method": cfg["method"], "preset": cfg["preset"], "dataset": "veri", "seed": cfg["seed"],
           "config": cfg, "runtime": runtime, "forms": forms, "teacher_hash": None, "wall_time_s": 0.3,
           "t": [t_start, time.time()]},
          open(out + "/metrics.json", "w"))
"""


class FakeStudy(Study):
    """A Study whose runs are the FAKE script (``fail_methods`` exit non-zero)."""

    fail_methods: tuple = ()

    def _command(self, job, fresh):
        script = job.run_dir / "fake.py"
        script.write_text(FAKE)
        cfg_path = job.run_dir / "cfg.json"
        runtime = resolve_runtime(job.cfg, torch.device("cpu"))  # what a real run records
        cfg_path.write_text(json.dumps([job.cfg.to_dict(), runtime]))
        mode = "fail" if job.spec.method in self.fail_methods else ("prune" if job.spec.method == "np" else "ok")
        return [sys.executable, str(script), str(job.run_dir), str(cfg_path), mode]

    def prepare_data(self):
        return None


def _fake_study(tmp_path, **kw):
    return FakeStudy("quick", runs_dir=tmp_path / "runs", results_dir=tmp_path / "results", verbose=False,
                     jobs=2, **kw)


def test_run_many_parallel_reuse_and_summary(tmp_path, monkeypatch):
    s = _fake_study(tmp_path)
    out = s.run_many([("student", 0, {}), ("np", 0, {"prune.threshold": 0.01}), ("np", 1, {})])
    assert [Path(m["run_dir"]).name for m in out] == ["student-s0", "np-threshold0.01-s0", "np-s1"]
    spans = [m["t"] for m in out]  # never more than jobs=2 at a time, and two did overlap
    overlap = [sum(a <= t < b for a, b in spans) for t, _ in spans]
    assert max(overlap) == 2
    summary = pd.read_csv(tmp_path / "results" / "summary.csv")
    assert sorted(zip(summary["run"], summary["form"])) == [("np-s1", "absorbed"), ("np-threshold0.01-s0", "absorbed"),
                                                            ("student-s0", "student")]
    assert summary["params_m"].tolist() == [0.001] * 3 and summary["macs_g"].tolist() == [0.002] * 3
    assert (s.run_dir("np", 1) / "run.log").read_text().count("training") == 1
    # a second call reuses everything: no subprocess may start
    import subprocess

    def no_popen(*a, **k):
        raise AssertionError("a finished run was re-trained")

    monkeypatch.setattr(subprocess, "Popen", no_popen)
    again = s.run_many([("student", 0, {}), ("np", 1, {})])
    assert again[0]["forms"] == out[0]["forms"]
    assert len(pd.read_csv(tmp_path / "results" / "summary.csv")) == 3  # rows replaced, not duplicated
    # same folder, other config: a clear error unless forced
    other = _fake_study(tmp_path, epochs=5)
    with pytest.raises(FileExistsError, match=r"student-s0.*optim\.epochs: 2 -> 5.*force=True"):
        other.run_many(["student"])


def test_a_finished_run_trained_with_other_args_defaults_is_refused(tmp_path):
    s = _fake_study(tmp_path)
    s.run_many(["student"])
    path = s.run_dir("student") / "metrics.json"
    m = json.loads(path.read_text())
    m["resolved_args"] = {}  # what the runner records for a method without args: nothing differs
    path.write_text(json.dumps(m))
    assert s.run_many(["student"])[0]["resolved_args"] == {}
    m["resolved_args"] = {"student": {"gain": 2.0}}  # args of a default the code no longer has
    path.write_text(json.dumps(m))
    with pytest.raises(FileExistsError, match=r"student-s0.*resolved_args\.student\.gain: 2\.0 -> '<missing>'"):
        s.run_many(["student"])


def test_force_and_teacher_change(tmp_path):
    s = _fake_study(tmp_path)
    first = s.run_many(["teacher", "kd"])
    kd_metrics = s.run_dir("kd") / "metrics.json"
    mtime = kd_metrics.stat().st_mtime
    # the teacher file changed since kd ran -> kd re-runs, the teacher does not
    (s.run_dir("teacher") / "model.pt").write_bytes(b"new teacher")
    teacher_mtime = (s.run_dir("teacher") / "metrics.json").stat().st_mtime
    s.run_many(["kd"])
    assert kd_metrics.stat().st_mtime > mtime
    assert (s.run_dir("teacher") / "metrics.json").stat().st_mtime == teacher_mtime
    # force=<time>: runs finished before it re-run once, later ones are reused
    since = time.time() + 0.01
    time.sleep(0.05)
    forced = _fake_study(tmp_path, force=since)
    forced.run_many(["teacher"])
    t2 = (s.run_dir("teacher") / "metrics.json").stat().st_mtime
    assert t2 > teacher_mtime
    forced.run_many(["teacher"])
    assert (s.run_dir("teacher") / "metrics.json").stat().st_mtime == t2
    assert first[1]["method"] == "kd"


def test_run_failure_reports_log_tail_and_others_finish(tmp_path):
    s = _fake_study(tmp_path)
    s.fail_methods = ("np",)
    with pytest.raises(RunFailed, match=r"(?s)np-s0 \(exit status 3\).*run\.log.*boom: something broke"):
        s.run_many(["student", "np"])
    assert (s.run_dir("student") / "metrics.json").is_file()
    assert not (s.run_dir("np") / "metrics.json").exists()
    summary = pd.read_csv(tmp_path / "results" / "summary.csv")
    assert list(summary["run"]) == ["student-s0"]


def test_a_run_that_may_fail_gives_none_with_allow_failed(tmp_path, capsys):
    s = _fake_study(tmp_path)
    s.fail_methods = ("np",)
    student, np_run = s.run_many(["student", "np"], allow_failed=True)
    assert np_run is None and student["run_dir"] == str(s.run_dir("student"))
    assert student["forms"] == json.loads((s.run_dir("student") / "metrics.json").read_text())["forms"]
    assert "np-s0 (exit status 3)" in capsys.readouterr().out  # said, with its log tail
    with pytest.raises(RunFailed) as e:
        s.run_many(["student", "np"])
    assert [spec.name for spec in e.value.failed] == ["np-s0"] and s.spec("student") in e.value.results


def test_load_runs_train_log_and_norms(tmp_path):
    runs = tmp_path / "runs" / "quick"
    d = _fake_run(runs, "kd_then_np-target_macs0.3-s0", "kd_then_np",
                  {"stage1_student": _form(30.0, 10, 10), "unpruned": _form(31.0, 10, 10),
                   "absorbed": _form(32.0, 5, 5)})
    (d / "stage1_kd").mkdir()
    (d / "stage2_np").mkdir()
    pd.DataFrame({"epoch": [1, 2], "loss_total": [3.0, 2.0]}).to_csv(d / "stage1_kd" / "train_log.csv", index=False)
    pd.DataFrame({"epoch": [1, 2, 3], "loss_total": [1.5, 1.0, 0.5]}).to_csv(d / "stage2_np" / "train_log.csv",
                                                                             index=False)
    (d / "stage2_np" / "pruner_norms.json").write_text(json.dumps({"1": [1.0, 0.5], "2": [0.9, 1e-4]}))
    s = Study("quick", runs_dir=tmp_path / "runs", verbose=False)
    df = s.load_runs()
    assert len(df) == 3 and set(df["tag"]) == {"target_macs0.3"}
    assert df.loc[df["deployed"], "form"].tolist() == ["absorbed"]
    log = s.train_log(d)
    assert log["global_epoch"].tolist() == [1, 2, 3, 4, 5]
    assert log["stage"].tolist() == ["stage1_kd"] * 2 + ["stage2_np"] * 3
    norms = s.pruner_norms(d)
    assert sorted(norms) == [1, 2] and float((norms[2] < 1e-3).mean()) == 0.5
    assert deployed_form({"teacher": 1}) == "teacher" and deployed_form({"unpruned": 1, "absorbed": 2}) == "absorbed"
    rows = summary_rows(json.loads((d / "metrics.json").read_text()))
    assert [r["form"] for r in rows] == ["unpruned", "absorbed"]
    # MACs kept: 3 of 12 M by the absorbed model; a thin network against a given full cost; else 1
    pruned = {"unpruned": {"macs": 12e6}, "absorbed": {"macs": 3e6}}
    assert macs_kept(pruned) == 0.25 and macs_kept(pruned, full_macs=6e6) == 0.25
    assert macs_kept({"student": {"macs": 3e6}}, full_macs=12e6) == 0.25 and macs_kept({"student": {"macs": 3e6}}) == 1.0
    assert math.isclose(rows[1]["params_m"], 5e-6)


def _append_many(results_dir: str, who: int, n: int) -> None:
    s = Study("quick", results_dir=results_dir, verbose=False)
    for i in range(n):
        s._record_summary({"run": f"r{who}-{i}", "method": "kd", "preset": "quick", "dataset": "veri", "seed": 0,
                           "forms": {"student": _form(40.0, 1000, 2000)}})


def test_concurrent_summary_appends_lose_nothing(tmp_path):
    """Two processes appending to one summary.csv at once (read-modify-write under the folder lock)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w, 15)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    df = pd.read_csv(tmp_path / "summary.csv")
    assert sorted(df["run"]) == sorted(f"r{w}-{i}" for w in range(2) for i in range(15))
    assert [p.name for p in tmp_path.iterdir()] == ["summary.csv"]  # no lock or temp files left


def test_plateau_rule_hand_computed():
    log = pd.DataFrame({"epoch": [1, 2, 3, 4], "eval_mAP": [30.0, None, 50.5, 51.2]})
    assert R.plateau(log) == {"last": 51.2, "previous": 50.5, "delta": pytest.approx(0.7), "flat": True}
    steep = R.plateau(pd.DataFrame({"eval_mAP": [40.0, 42.0]}))
    assert steep["delta"] == 2.0 and not steep["flat"]
    assert not R.plateau(pd.DataFrame({"eval_mAP": [40.0]}))["flat"]
    assert math.isnan(R.plateau(pd.DataFrame({"loss": [1.0]}))["delta"])


def test_main_seeds_and_from_notebook(tmp_path, monkeypatch):
    s = Study("quick", runs_dir=tmp_path / "runs", results_dir=tmp_path / "r", seed=4)
    assert s.main_seeds(None, full=False) == [4]
    assert s.main_seeds(None, full=True) == [4, 5, 6]
    assert s.main_seeds([9, 2, 2], full=True) == [2, 4, 9]  # the study's own seed is always included
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    (repo / "pyproject.toml").write_text("")
    monkeypatch.chdir(repo / "notebooks")  # a JupyterLab kernel starts in the notebook's folder
    params = dict(preset="quick", data_root=None, runs_dir="runs", out="results", force=False, jobs=1,
                  epochs=3, seed=1, dataset=None, device="cpu", unrelated=object())
    st = Study.from_notebook(params)
    assert Path.cwd() == repo and st.base == repo and st.seed == 1 and st.jobs == 1
    assert st.config("student").optim.epochs == 3 and st.config("student").device == "cpu"


def test_progress_line_counts_epochs_and_estimates_time_left(tmp_path, monkeypatch):
    from deap_lib.study import _Job

    s = Study("quick", runs_dir=tmp_path / "runs", results_dir=tmp_path / "r", jobs=2)
    jobs = []
    for method, done in (("teacher", 1), ("student", 0)):
        spec = s.spec(method)
        job = _Job(spec, s.config(spec), s.run_dir(spec), t0=100.0)
        job.run_dir.mkdir(parents=True)
        (job.run_dir / "train_log.csv").write_text("epoch,loss\n" + "".join(f"{e},1.0\n" for e in range(1, done + 1)))
        jobs.append(job)
    teacher, student = jobs
    queued = _Job(s.spec("kd"), s.config(s.spec("kd")), s.run_dir(s.spec("kd")))
    # quick: teacher 3 epochs (cost 3.0), student 2 epochs (cost 2.0), kd 2 epochs with a teacher (cost 2.7)
    assert s._epochs(teacher) == (1, 3) and s._epochs(student) == (0, 2)
    line = s.progress_line([teacher, student], [queued], rates=[], now=130.0)
    # the teacher did 1/3 of its cost 3 in 30 s: 30 s per cost unit; work left 2 + 2 + 2.7 = 6.7 units over
    # 2 slots -> 100.5 s = ~2 min
    assert line == "[progress] training teacher-s0 1/3, student-s0 0/2 (epochs) | 1 queued | ~2 min left"
    assert s.progress_line([], [queued], rates=[]) is None
    assert "left" not in s.progress_line([student], [], rates=[], now=130.0)  # no epoch done yet: no estimate
    printed = []
    monkeypatch.setattr("builtins.print", lambda *a, **k: printed.append(a[0]))
    monkeypatch.delenv("CI", raising=False)
    s._report_progress(line)
    s._report_progress(line)  # unchanged: not repeated
    monkeypatch.setenv("CI", "true")
    s._report_progress(line.replace("1/3", "2/3"))  # quiet in CI
    assert printed == [line]


def test_progress_echo_passes_study_lines_and_rewrites_on_a_terminal():
    import io

    from deap_lib.reproduce import ProgressEcho

    plain = io.StringIO()
    e = ProgressEcho(plain)
    e.write("a table row\n[study] teacher-s0: training\n[progr")
    e.write("ess] training teacher-s0 1/3 (epochs)\nother\n")
    assert plain.getvalue() == "[study] teacher-s0: training\n[progress] training teacher-s0 1/3 (epochs)\n"

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    e = ProgressEcho(tty)
    e.write("[progress] a\n[progress] b\n[study] done\n")
    assert tty.getvalue() == "\r" + "[progress] a".ljust(160) + "\r" + "[progress] b".ljust(160) + "\n[study] done\n"


def test_pretraining_stage_runs_first_and_is_shared(tmp_path):
    """A run that starts from the pre-trained backbone gets the study's pretrain run (trained first, on its
    own corpus beside the study's data), records its hash, and is retrained when the pre-training is redone."""
    import torch

    from deap_lib.fileio import file_sha256
    from deap_lib.export import load_compact, save_compact

    s = Study("quick", data_root=tmp_path / "data", runs_dir=tmp_path / "runs", results_dir=tmp_path / "r",
              jobs=1, base=tmp_path, verbose=False)
    pre_cfg = s.config("pretrain")
    assert pre_cfg.data.synthetic == "tiny_pretrain" and pre_cfg.data.root == str(tmp_path / "data") + "_pretrain"
    assert pre_cfg.student_init == "random"
    assert s.config("student").pretrained_path is None  # the quick preset starts from random weights
    warm = s.config("student", overrides={"student_init": "checkpoint"})
    assert warm.pretrained_path == s.pretrain_path() == str(tmp_path / "runs" / "quick" / "pretrain-s0" / "model.pt")
    (m,) = s.run_many([("student", 0, {"student_init": "checkpoint"})])
    pre = s.metrics(s.run_dir("pretrain"))
    assert set(pre["forms"]) == {"pretrained"} and pre["config"]["data"]["synthetic"] == "tiny_pretrain"
    path = tmp_path / "runs" / "quick" / "pretrain-s0" / "model.pt"
    assert m["pretrained_hash"] == file_sha256(str(path))
    student = load_compact(str(Path(m["run_dir"]) / "model.pt"))
    assert student.config["pcp"] is None
    # the pretrain run is no row of the benchmark's tables
    assert set(s.load_runs()["method"]) == {"student"}
    assert s.run_many([("student", 0, {"student_init": "checkpoint"})])[0]["wall_time_s"] == m["wall_time_s"]
    other = load_compact(str(path))
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    save_compact(other, str(path))  # the pre-training changed: its dependants retrain
    again = s.run_many([("student", 0, {"student_init": "checkpoint"})])[0]
    assert again["wall_time_s"] != m["wall_time_s"] and again["pretrained_hash"] == file_sha256(str(path))


def test_a_run_on_another_backbone_gets_its_own_teacher_and_pretraining(tmp_path):
    """Notebook 07's MobileNetV2 runs: the teacher and the pre-training a run depends on follow its
    ``model.arch`` / ``model.width`` overrides; the preset's runs keep theirs."""
    s = Study("cpu", runs_dir=tmp_path / "runs", verbose=False)
    arch = {"model.arch": "mobilenet_v2", "model.width": 0.5}
    sk = s.spec("structure_kd", 0, {**arch, "prune.target_macs": 0.5})
    ov = s._run_overrides(sk)
    assert ov["teacher_path"] == str(Path(s.runs_dir) / "cpu" / "teacher-archmobilenet_v2_width0.5-s0" / "model.pt")
    assert ov["pretrained_path"] == str(Path(s.runs_dir) / "cpu" / "pretrain-archmobilenet_v2_width0.5-s0" / "model.pt")
    t = s.teacher_spec(0, s.arch_overrides(sk))
    assert t.name == "teacher-archmobilenet_v2_width0.5-s0" and s._needs_pretrain(t)
    assert s._run_overrides(t)["pretrained_path"] == ov["pretrained_path"]
    kd = s._run_overrides(s.spec("kd", 0))
    assert kd["teacher_path"] == str(Path(s.runs_dir) / "cpu" / "teacher-s0" / "model.pt")
    assert kd["pretrained_path"] == str(Path(s.runs_dir) / "cpu" / "pretrain-s0" / "model.pt")
    assert s.arch_overrides(s.spec("kd", 0, {"model.arch": "resnet50"})) == {}  # the preset's own: no new teacher


def test_learned_budget_is_deaps_absorbed_share_of_its_unpruned_macs(monkeypatch):
    """The equal-MACs budget: DEAP's absorbed MACs over its unpruned MACs, rounded to 4 places (by hand)."""
    s = Study("quick", verbose=False)
    asked = []

    def fake_run(method, seed=None, **kw):
        asked.append((method, seed))
        return {"forms": {"unpruned": {"macs": 34_600_000}, "absorbed": {"macs": 17_224_000}}}

    monkeypatch.setattr(s, "run", fake_run)
    assert s.learned_budget(2) == 0.4978  # 17.224 / 34.6 = 0.497803...
    assert asked == [("deap", 2)]


def test_training_subprocesses_import_this_checkout(monkeypatch):
    """The subprocess environment puts the folder that holds this deap_lib first on PYTHONPATH (so
    ``python -m deap_lib train`` runs this code), never the package folder itself (whose modules would shadow
    top-level names such as ``data`` or ``config``)."""
    import deap_lib

    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = Study("quick", verbose=False)._env()
    first, *rest = env["PYTHONPATH"].split(os.pathsep)
    assert Path(first) == Path(deap_lib.__file__).resolve().parents[1] and (Path(first) / "deap_lib").is_dir()
    assert rest == ["/elsewhere"] and env["OMP_NUM_THREADS"] == str(Study("quick", verbose=False).threads)


# ------------------------------------------------------------------------------------------------ figures
def test_figure_problems_catch_unnamed_and_unlisted_series(tmp_path):
    """A figure reads at a glance when every one of several series is named in a legend and the axes are
    labelled; bars named by their category ticks need no legend. Checked on what save_figure records."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def problems(draw):
        fig, ax = plt.subplots()
        draw(ax)
        R.save_figure(fig, tmp_path, "99_1_x")
        plt.close(fig)
        rec = json.loads((tmp_path / "figures" / "99_1_x.json").read_text())
        return R.figure_problems(rec["axes"])

    def two_unnamed(ax):  # the earlier 04_2: same-looking points, nothing says which is which
        ax.plot([1, 2], [3, 4], "o")
        ax.plot([1, 2], [3.5, 4.5], "o")
        ax.set(xlabel="MACs", ylabel="mAP")

    def named_no_legend(ax):
        ax.plot([1, 2], [3, 4], label="deap")
        ax.axhline(3.5, ls="--", label="teacher")
        ax.set(xlabel="MACs", ylabel="mAP")

    def good(ax):
        named_no_legend(ax)
        ax.errorbar([1, 2], [3, 4], yerr=[0.1, 0.2], label="kd")
        ax.legend()

    def bars(ax):  # categories on the axis, error bars with them: no legend needed
        ax.bar(["teacher", "deap"], [74.5, 74.1], yerr=[1.0, 1.1])
        ax.set(ylabel="mAP (%)")

    assert problems(two_unnamed) == ["axes 0: 2 of 2 series have no label"]
    assert problems(named_no_legend) == ["axes 0: not in the legend: deap, teacher"]
    assert problems(good) == [] and problems(bars) == []
    assert problems(lambda ax: ax.plot([1, 2], [3, 4])) == ["axes 0: no x-axis label", "axes 0: no y-axis label"]


def test_train_seconds_sum_every_stage_and_every_resumed_process(tmp_path):
    from deap_lib.rundir import RunDir

    one = tmp_path / "one"
    one.mkdir()
    (one / "train_log.csv").write_text("epoch,iteration,seconds\n1,4,2.5\n2,8,3.0\n3,12,4.25\n")
    assert RunDir(one).train_seconds == 9.75  # epochs 1-2 by one process, 3 by the one that resumed it
    two = tmp_path / "two"
    for stage, rows in (("stage1_kd", "1,4,1.0\n2,8,2.0\n"), ("stage2_np", "1,4,0.5\n")):
        (two / stage).mkdir(parents=True)
        (two / stage / "train_log.csv").write_text("epoch,iteration,seconds\n" + rows)
    assert RunDir(two).train_seconds == 3.5
