"""Generate the numbered study notebooks (clean: no outputs, fixed cell ids) from the sources below.

    python notebooks/_build.py           # (re)write notebooks/*.ipynb
    python notebooks/_build.py --check   # exit 1 if a committed notebook differs from its source here

Edit the cells here, not in the .ipynb files. Every notebook starts with a cell tagged ``parameters``
(papermill injects new values after it), then a set-up cell making a :class:`deap_lib.study.Study`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import nbformat

HERE = Path(__file__).resolve().parent

PARAMETERS = '''\
# Parameters (papermill injects new values after this cell)
preset = "cpu"        # quick | cpu | paper
dataset = None        # None: the preset's dataset (veri)
data_root = None      # None: the preset's data folder (the synthetic set is generated there)
device = None         # None: the preset's ("auto"); e.g. "cpu"
seed = 0
out = "results"       # results folder: tables/, figures/, records/, summary.csv
runs_dir = "runs"     # run folders: <runs_dir>/<preset>/<method>[-<tag>]-s<seed>/
epochs = None         # None: the preset's number of epochs
force = False         # True: re-train this notebook's runs
jobs = 2              # training subprocesses at a time (1 thread each)
full = False          # the full study's extras (ablations)'''

SETUP = '''\
import os
import sys
from pathlib import Path

if Path.cwd().name == "notebooks" and (Path.cwd().parent / "pyproject.toml").is_file():
    os.chdir("..")  # all paths are relative to the repository root
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from deap_lib import results as R
from deap_lib.study import Study, deployed_form

study = Study(preset, data_root=data_root, runs_dir=runs_dir, results_dir=out, force=force, jobs=jobs,
              epochs=epochs, seed=seed, dataset=dataset, device=device)
study'''

Cell = Tuple[str, str]  # (kind, source): kind in {"md", "code", "parameters"}


def md(s: str) -> Cell:
    return ("md", s.strip("\n"))


def code(s: str) -> Cell:
    return ("code", s.strip("\n"))


NOTEBOOKS: Dict[str, Tuple[str, List[Cell], str]] = {}

# ------------------------------------------------------------------------------------------------ 00
NOTEBOOKS["00_data"] = ("# 00 - Data\n\nLocate (or generate) the dataset, count identities / images / cameras "
                        "per split and show sample identities across cameras.", [
    code('''
ds = study.prepare_data()
cfg = study.config("teacher")
print(ds.summary_table())
summary = ds.summary()
stats = pd.DataFrame([{"split": s, **v} for s, v in summary.items()])
R.save_table(stats, out, "00_1_dataset_stats",
             caption=f"Dataset `{ds.name}`: identities, images and cameras per split")
stats'''),
    md("Sample identities (rows) seen by different cameras (columns). For the synthetic set each tile is "
       "labelled with its identity, camera and generating factors."),
    code('''
root = Path(ds.root)
synthetic = (root / "factors.csv").is_file()
if synthetic:
    from deap_lib.data import read_factors, sample_grid

    grid = sample_grid(root, n_ids=6, split="test", max_cams=6, seed=seed)
else:
    from deap_lib.study import dataset_grid

    grid = dataset_grid(ds, n_ids=6, max_cams=6, seed=seed)
R.save_image(grid, out, "00_2_identity_grid", caption="Sample test identities (rows) across cameras (columns)")
grid'''),
    code('''
if synthetic:
    factors = pd.DataFrame(read_factors(root))
    factors["split"] = factors["split"].replace({"query": "test", "gallery": "test"})
    mix = (factors.drop_duplicates(["split", "pid"]).groupby(["type", "split"]).size()
           .unstack(fill_value=0).reset_index())
    R.save_table(mix, out, "00_3_vehicle_types", caption="Synthetic identities per vehicle type and split")
    display(mix)'''),
    code('''
cams = {s: v["cameras"] for s, v in summary.items()}
R.record(out, "00_data", {
    "dataset": ds.name, "synthetic": synthetic, "preset": preset,
    "train_ids": summary["train"]["ids"], "train_images": summary["train"]["images"],
    "query_ids": summary["query"]["ids"], "query_images": summary["query"]["images"],
    "gallery_ids": summary["gallery"]["ids"], "gallery_images": summary["gallery"]["images"],
    "cameras": max(cams.values()), "python": sys.executable,
})'''),
], "")

# ------------------------------------------------------------------------------------------------ 01
NOTEBOOKS["01_teacher"] = ("# 01 - Teacher and plain student\n\nTrain (or reuse) the teacher every distillation "
                           "run uses and the plain student trained without a teacher.", [
    code('''
if seeds is None:  # the full study repeats the main runs with three seeds (their mean and std: notebook 02)
    seeds = [seed, seed + 1, seed + 2] if full else [seed]
seeds = sorted({int(s) for s in seeds} | {int(seed)})
if convergence is None:
    convergence = full
epochs_t = study.config("teacher").optim.epochs
specs = [(m, s, {}) for m in ("teacher", "student") for s in seeds]
if convergence:  # a teacher with twice the epochs, trained in the same pool (both cores busy)
    specs.append(("teacher", seed, {"optim.epochs": 2 * epochs_t}, "x2"))
ms = study.run_many(specs)
by = {(m["method"], m["seed"]): m for m in ms[:2 * len(seeds)]}
teacher, student = by[("teacher", seed)], by[("student", seed)]
rows = []
for m in ms[:2 * len(seeds)]:
    f = m["forms"][deployed_form(m["forms"])]
    rows.append({"model": m["method"], "seed": m["seed"], "mAP % [95% CI]": f["mAP_text"], "Rank-1 %": f["rank1"],
                 "mINP %": f["mINP"], "params (M)": f["params_no_classifier"] / 1e6, "MACs (M)": f["macs"] / 1e6,
                 "train time (s)": m["wall_time_s"]})
table = pd.DataFrame(rows)
R.save_table(table, out, "01_1_teacher_student", caption="Teacher and plain student (no distillation, no pruning)"
             + (f", seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else ""))
table'''),
    md("Training curves: the loss terms per epoch and, when evaluated during training, mAP over epochs."),
    code('''
logs = {m["method"]: study.train_log(m["run_dir"]) for m in (teacher, student)}
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for name, log in logs.items():
    for c in [c for c in log.columns if c.startswith("loss_") and c != "loss_total"]:
        axes[0].plot(log["global_epoch"], log[c], marker=".", label=f"{name}: {c[5:]}")
    if "eval_mAP" in log:
        axes[1].plot(log["global_epoch"], log["eval_mAP"], marker="o", label=name)
axes[0].set(xlabel="epoch", ylabel="loss term", title="loss terms")
axes[1].set(xlabel="epoch", ylabel="mAP (%)", title="mAP during training")
for ax in axes:
    ax.legend(fontsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
R.save_figure(fig, out, "01_2_training_curves", caption="Teacher and student: loss terms and mAP over epochs")'''),
    md("Is the teacher trained to convergence? With `convergence` (by default in the full study) a second "
       "teacher is trained with twice the epochs on the same data and seed; the paired bootstrap over query "
       "identities says whether the longer schedule is better."),
    code('''
conv = {}
if convergence:
    from deap_lib.evaluation import paired_bootstrap

    longer = ms[-1]
    pq = [dict(np.load(Path(m["run_dir"]) / "per_query_teacher.npz")) for m in (longer, teacher)]
    d = paired_bootstrap(*pq)["mAP"]
    conv = {"epochs": epochs_t, "epochs_long": 2 * epochs_t, "mAP": teacher["forms"]["teacher"]["mAP"],
            "mAP_long": longer["forms"]["teacher"]["mAP"], "d_mAP": 100 * d["diff"], "d_mAP_low": 100 * d["low"],
            "d_mAP_high": 100 * d["high"]}
    ctab = pd.DataFrame([conv])
    R.save_table(ctab, out, "01_3_teacher_convergence",
                 caption="Teacher trained with twice the epochs: mAP difference (long - default) with its paired "
                         "95 % bootstrap interval")
    log_long = study.train_log(longer["run_dir"])
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for name, log in (("teacher", logs["teacher"]), ("teacher x2 epochs", log_long)):
        ok = log["eval_mAP"].notna()
        ax.plot(log.loc[ok, "global_epoch"], log.loc[ok, "eval_mAP"], marker="o", label=name)
    ax.set(xlabel="epoch", ylabel="mAP (%)", title="teacher: default vs doubled schedule")
    ax.legend()
    R.save_figure(fig, out, "01_4_teacher_convergence", caption="mAP over epochs of the teacher and of a teacher "
                  "trained twice as long")
    display(ctab)
else:
    print("convergence=False: the doubled-schedule teacher is trained only in the full study")'''),
    code('''
tf, sf = teacher["forms"]["teacher"], student["forms"]["student"]
R.record(out, "01_teacher", {
    "teacher_mAP": tf["mAP"], "teacher_mAP_low": tf["mAP_low"], "teacher_mAP_high": tf["mAP_high"],
    "teacher_rank1": tf["rank1"], "teacher_params_m": tf["params_no_classifier"] / 1e6,
    "teacher_macs_m": tf["macs"] / 1e6, "student_mAP": sf["mAP"], "student_rank1": sf["rank1"],
    "epochs": int(logs["teacher"]["epoch"].max()),
    "eval_points": int(logs["teacher"]["eval_mAP"].notna().sum()) if "eval_mAP" in logs["teacher"] else 0,
    "final_loss_teacher": float(logs["teacher"]["loss_total"].iloc[-1]),
    "teacher_run": teacher["run_dir"], "convergence": conv, "seeds": seeds,
    "per_seed": {f"{m['method']}-s{m['seed']}": m["forms"][deployed_form(m["forms"])]["mAP"] for m in ms[:2 * len(seeds)]},
})'''),
], "convergence = None   # also train a teacher with twice the epochs (None: only when full)\n"
   "seeds = None         # seeds of the main runs (None: seed, seed+1, seed+2 when full, else seed)")

# ------------------------------------------------------------------------------------------------ 02
NOTEBOOKS["02_dilemma"] = ("# 02 - The KD + NP dilemma\n\nKnowledge distillation alone (kd), network pruning "
                           "alone (np), their naive combinations (kd_np_direct; with `sequential`, by default in "
                           "the full study, also kd_then_np and np_then_kd) and DEAP, all pruning methods cut to "
                           "the same MAC budget (`target_macs`, a fraction of the unpruned student's MACs).", [
    code('''
if sequential is None:  # two more training runs: by default only in the full study (time budget)
    sequential = full
PRUNING = ["np"] + (["kd_then_np", "np_then_kd"] if sequential else []) + ["kd_np_direct", "deap"]
if target_macs is None:  # the preset's own budget (cpu: its target_macs), else 30 %
    target_macs = study.config("deap").prune.target_macs or 0.3
if seeds is None:  # the full study repeats the main methods with three seeds
    seeds = [seed, seed + 1, seed + 2] if full else [seed]
seeds = sorted({int(s) for s in seeds} | {int(seed)})
MAIN = ["teacher", "student", "kd", "np", "kd_np_direct", "deap"]  # repeated for every seed
budget = {"prune.target_macs": float(target_macs)}
specs = [("teacher", seed, {}), ("student", seed, {}), ("kd", seed, {})]
specs += [(m, seed, budget) for m in PRUNING]
specs += [(m, s, budget if m in PRUNING else {}) for s in seeds if s != seed for m in MAIN]
all_ms = study.run_many(specs)  # one pool: every run of every seed, longest first
ms = [m for m in all_ms if m["seed"] == seed]
all_runs = study.load_runs()
all_runs = all_runs[all_runs["run"].isin([Path(m["run_dir"]).name for m in all_ms])]
runs = all_runs[all_runs["seed"] == seed]
table = R.main_table(runs, methods=["teacher", "student", "kd"] + PRUNING)
by_run = {Path(m["run_dir"]).name: m["forms"] for m in ms}
table["macs_fraction"] = [by_run[r]["absorbed"]["macs"] / by_run[r]["unpruned"]["macs"] if "absorbed" in by_run[r]
                          else 1.0 for r in table["run"]]
R.save_table(table, out, "02_1_dilemma_table", markdown_df=R.format_main_table(table),
             caption=f"Deployed models at a MAC budget of {target_macs:.0%} of the unpruned student, seed {seed} "
                     "(mAP difference vs the teacher: paired bootstrap over query identities)")
R.format_main_table(table)'''),
    code('''
fig, ax = plt.subplots(figsize=(8, 3.6))
x = np.arange(len(table))
err = np.vstack([table["mAP"] - table["mAP_low"], table["mAP_high"] - table["mAP"]])
colors = ["tab:gray" if m in ("teacher", "student", "kd") else ("tab:red" if m == "deap" else "tab:blue")
          for m in table["method"]]
ax.bar(x, table["mAP"], yerr=err, color=colors, capsize=3)
ax.set_xticks(x, table["method"], rotation=30, ha="right")
ax.axhline(float(table.loc[table["method"] == "teacher", "mAP"].iloc[0]), ls="--", c="k", lw=1, label="teacher")
ax.set(ylabel="mAP (%) [95% CI]", title=f"deployed models, pruning methods at {target_macs:.0%} MACs")
ax.legend()
R.save_figure(fig, out, "02_2_dilemma_map", caption="mAP with 95 % intervals of every method (pruning methods at "
              "the same MAC budget)")'''),
    code('''
fig, ax = plt.subplots(figsize=(8, 3.6))
for m in ms:
    log = study.train_log(m["run_dir"])
    if "eval_mAP" in log and log["eval_mAP"].notna().any():
        ok = log["eval_mAP"].notna()
        ax.plot(log.loc[ok, "global_epoch"], log.loc[ok, "eval_mAP"], marker="o", ms=3, label=m["method"])
ax.set(xlabel="epoch (two-stage methods: both stages)", ylabel="mAP (%) of the training-form model",
       title="mAP over epochs")
ax.legend(fontsize=7, ncol=2)
ax.xaxis.set_major_locator(MaxNLocator(integer=True))
R.save_figure(fig, out, "02_3_dilemma_curves", caption="mAP over training epochs (before the final cut)")'''),
    md("Is DEAP better than each alternative? The paired bootstrap over query identities of DEAP's absorbed "
       "model against every other deployed model (same queries, same identity draws); `p_better` is the share "
       "of resamples in which DEAP scores higher."),
    code('''
from deap_lib.evaluation import paired_bootstrap

by_method = {m["method"]: m for m in ms}
ref = R.load_per_query(by_method["deap"]["run_dir"], "absorbed")
vs = []
for m in table["method"]:
    if m == "deap":
        continue
    other = by_method[m]
    d = paired_bootstrap(ref, R.load_per_query(other["run_dir"], deployed_form(other["forms"])))["mAP"]
    vs.append({"deap vs": m, "d_mAP": 100 * d["diff"], "d_low": 100 * d["low"], "d_high": 100 * d["high"],
               "p_better": d["frac_a_gt_b"],
               "verdict": "DEAP better" if d["low"] > 0 else ("DEAP worse" if d["high"] < 0 else "no clear difference")})
vs = pd.DataFrame(vs)
R.save_table(vs, out, "02_4_deap_vs_each", caption="DEAP (absorbed) minus each other deployed model: mAP difference "
             f"in points with its 95 % paired-bootstrap interval (seed {seed})")
vs'''),
    md("Across seeds (with several `seeds`, by default in the full study): every main method trained with each "
       "seed (initialisation, batch order and augmentations change; each distillation run uses the teacher of its "
       "own seed). Mean and sample standard deviation over seeds, the Student-t 95 % interval of the mean, and "
       "DEAP minus each method seed by seed. Three seeds give wide intervals: a difference is called only when "
       "its interval excludes zero."),
    code('''
seed_rec = {}
if len(seeds) > 1:
    over = R.seed_summary(all_runs, methods=MAIN)
    R.save_table(over, out, "02_5_seeds", markdown_df=R.format_seed_summary(over),
                 caption=f"Main methods over seeds {', '.join(map(str, seeds))}: mAP mean ± sample std, the 95 % "
                         "t interval of the mean, and the difference to the teacher of the same seed")
    diffs = R.seed_differences(all_runs, "deap", methods=[m for m in MAIN if m != "deap"])
    diffs["verdict"] = ["DEAP better" if lo > 0 else ("DEAP worse" if hi < 0 else "no clear difference")
                        for lo, hi in zip(diffs["d_ci_low"], diffs["d_ci_high"])]
    R.save_table(diffs, out, "02_6_deap_vs_each_seeds", caption="DEAP (absorbed) minus each main method, seed by "
                 "seed (mAP points): mean, sample std, 95 % t interval over seeds, seeds DEAP wins")
    dep = all_runs[all_runs["deployed"]]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for i, m in enumerate(MAIN):
        g = dep[dep["method"] == m]
        ax.scatter(np.full(len(g), i) + np.linspace(-0.12, 0.12, len(g)), g["mAP"], s=18, c="tab:gray", zorder=3)
        r = over.set_index("method").loc[m]
        ax.errorbar(i, r["mAP_mean"], yerr=[[r["mAP_mean"] - r["mAP_ci_low"]], [r["mAP_ci_high"] - r["mAP_mean"]]],
                    fmt="D", c="tab:red" if m == "deap" else "k", capsize=4, zorder=4)
    ax.set_xticks(range(len(MAIN)), MAIN, rotation=30, ha="right")
    ax.set(ylabel="mAP (%)", title=f"seeds {', '.join(map(str, seeds))}: runs (dots), mean with 95 % t interval")
    R.save_figure(fig, out, "02_7_seeds_map", caption="mAP of every seed's deployed model (dots) and the mean over "
                  "seeds with its 95 % t interval")
    seed_rec = {"seeds": seeds,
                "methods": {r["method"]: {k: r[k] for k in ("n_seeds", "mAP_mean", "mAP_std", "mAP_ci_low",
                                                             "mAP_ci_high", "d_teacher_mean", "d_teacher_std",
                                                             "d_teacher_ci_low", "d_teacher_ci_high", "macs_m",
                                                             "params_m")}
                            for r in over.to_dict("records")},
                "deap_vs": {r["vs"]: {k: r[k] for k in ("n_seeds", "d_mean", "d_std", "d_ci_low", "d_ci_high",
                                                        "wins", "verdict")} for r in diffs.to_dict("records")}}
    display(R.format_seed_summary(over), diffs)
else:
    print("one seed: the seed statistics are made in the full study (or with seeds=[0, 1, 2])")'''),
    code('''
rec = {m: {k: float(v) for k, v in table.loc[table["method"] == m,
           ["mAP", "mAP_low", "mAP_high", "d_mAP", "d_mAP_low", "d_mAP_high", "macs_fraction", "macs_m"]]
           .iloc[0].items()} for m in table["method"]}
best_baseline = max(rec[m]["mAP"] for m in PRUNING if m != "deap")
R.record(out, "02_dilemma", {"target_macs": float(target_macs), "methods": rec,
                             "deap_vs": {r["deap vs"]: {k: (float(r[k]) if k != "verdict" else r[k])
                                                        for k in ("d_mAP", "d_low", "d_high", "p_better", "verdict")}
                                         for r in vs.to_dict("records")},
                             "deap_minus_best_pruning_baseline": rec["deap"]["mAP"] - best_baseline,
                             "seed_stats": seed_rec})'''),
], "target_macs = None    # MAC budget of every pruning method here (fraction of the unpruned student);\n"
   "                      # None: the preset's (prune.target_macs), or 0.3 where the preset cuts by threshold\n"
   "sequential = None     # also kd_then_np and np_then_kd (None: only when full)\n"
   "seeds = None         # seeds of the main methods (None: seed, seed+1, seed+2 when full, else seed)")

# ------------------------------------------------------------------------------------------------ 03
NOTEBOOKS["03_deap"] = ("# 03 - DEAP training\n\nDEAP with the preset's own pruning rule: loss terms, the "
                        "evolution of the pruner norms, the three evaluated forms; with `full`, ablations of the "
                        "loss terms and of the proximal pruner update.", [
    code('''
deap = study.run("deap", seed)
cfg = study.config("deap")
thr = cfg.prune.threshold
forms = pd.DataFrame([{"form": f, "mAP % [95% CI]": r["mAP_text"], "Rank-1 %": r["rank1"],
                       "params (M)": r["params_no_classifier"] / 1e6, "MACs (M)": r["macs"] / 1e6}
                      for f, r in deap["forms"].items()])
pc = cfg.prune
rule = (f"threshold {thr:g} on pruner norms" if pc.target_macs is None else
        f"{pc.schedule} pruning to {pc.target_macs:.0%} of the MACs, {pc.allocation} allocation")
R.save_table(forms, out, "03_1_deap_forms", caption=f"DEAP ({rule}): evaluated forms" + (
    "; with gradual pruning `unpruned` is the trained network before its zeroed channels are removed"
    if pc.target_macs is not None and pc.schedule == "gradual" else ""))
forms'''),
    code('''
log = study.train_log(deap["run_dir"])
terms = [c for c in log.columns if c.startswith("loss_") and c != "loss_total"]
fig, ax = plt.subplots(figsize=(8, 3.6))
for c in terms:
    ax.plot(log["global_epoch"], log[c].abs().clip(lower=1e-12), marker=".", label=c[5:])
ax.set_yscale("log")
ax.set(xlabel="epoch", ylabel="weighted loss term (log)", title="DEAP loss terms")
ax.legend(fontsize=7, ncol=2)
ax.xaxis.set_major_locator(MaxNLocator(integer=True))
R.save_figure(fig, out, "03_2_deap_losses", caption="DEAP: weighted loss terms per epoch")'''),
    code('''
norms = study.pruner_norms(deap["run_dir"])
epochs_logged = sorted(norms)
lo = np.log10(max(min(float(v[v > 0].min()) if (v > 0).any() else thr for v in norms.values()), 1e-8))
hi = np.log10(max(float(v.max()) for v in norms.values())) + 1e-6
bins = np.linspace(min(lo, np.log10(thr)) - 0.5, hi + 0.1, 41)
hist = np.stack([np.histogram(np.log10(np.maximum(norms[e], 1e-12)), bins=bins)[0] for e in epochs_logged])
below = [float((norms[e] < thr).mean()) for e in epochs_logged]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
im = axes[0].imshow(hist.T, origin="lower", aspect="auto", cmap="viridis",
                    extent=[epochs_logged[0] - 0.5, epochs_logged[-1] + 0.5, bins[0], bins[-1]])
axes[0].axhline(np.log10(thr), c="w", ls="--", lw=1)
axes[0].set(xlabel="epoch", ylabel="log10 pruner norm", title="pruner-norm histogram per epoch")
fig.colorbar(im, ax=axes[0], label="channels")
axes[1].plot(epochs_logged, below, marker="o")
axes[1].set(xlabel="epoch", ylabel=f"share of norms < {thr:g}", ylim=(-0.02, 1.02), title="share below threshold")
for ax in axes:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
R.save_figure(fig, out, "03_3_pruner_norms", caption="DEAP pruner norms: histogram per epoch (dashed: threshold) and "
              "share below the threshold")'''),
    code('''
ABLATIONS = {"ARKD alpha=0": {"loss.arkd_alpha": 0.0}, "ARKD beta=0": {"loss.arkd_beta": 0.0},
             "no DL": {"loss.dl_weight": 0.0}, "no KL": {"loss.kl_weight": 0.0},
             "proximal update": {"prune.proximal": True}}
ablation = {}
if full:
    from deap_lib.evaluation import paired_bootstrap

    variants = study.run_many([("deap", seed, ov) for ov in ABLATIONS.values()])
    ref = R.load_per_query(deap["run_dir"], "absorbed")
    rows = []
    for (label, ov), m in zip([("DEAP (all terms, subgradient)", {})] + list(ABLATIONS.items()), [deap] + variants):
        f = m["forms"]["absorbed"]
        d = paired_bootstrap(R.load_per_query(m["run_dir"], "absorbed"), ref)["mAP"]
        rows.append({"variant": label, "mAP": f["mAP"], "mAP_low": f["mAP_low"], "mAP_high": f["mAP_high"],
                     "d_mAP_vs_deap": 100 * d["diff"], "d_low": 100 * d["low"], "d_high": 100 * d["high"],
                     "macs_m": f["macs"] / 1e6, "params_m": f["params_no_classifier"] / 1e6})
        ablation[label] = rows[-1]
    abl = pd.DataFrame(rows)
    R.save_table(abl, out, "03_4_deap_ablation", caption="DEAP ablations (absorbed models; difference vs full DEAP, "
                 "paired bootstrap)")
    fig, ax = plt.subplots(figsize=(8, 3.4))
    ax.bar(abl["variant"], abl["mAP"], yerr=[abl["mAP"] - abl["mAP_low"], abl["mAP_high"] - abl["mAP"]], capsize=3)
    ax.set_xticks(range(len(abl)), abl["variant"], rotation=25, ha="right")
    ax.set(ylabel="mAP (%) [95% CI]", title="DEAP ablations")
    R.save_figure(fig, out, "03_5_deap_ablation_map", caption="DEAP ablations: mAP of the absorbed models")
    display(abl)
else:
    print("full=False: ablations skipped")'''),
    code('''
kept = sum(sum(w) for w in deap["kept_widths"]) / sum(sum(w) for w in deap["original_widths"])
R.record(out, "03_deap", {
    "threshold": thr, "mAP_unpruned": deap["forms"]["unpruned"]["mAP"], "mAP_pruned": deap["forms"]["pruned"]["mAP"],
    "mAP_absorbed": deap["forms"]["absorbed"]["mAP"], "kept_fraction": kept, "epochs_logged": len(epochs_logged),
    "frac_below_thr_final": below[-1], "loss_terms": [c[5:] for c in terms], "ablation": ablation,
})'''),
], "")

# ------------------------------------------------------------------------------------------------ 04
NOTEBOOKS["04_absorb_and_plots"] = ("# 04 - Absorption, complexity and speed\n\nAbsorb the trained DEAP student "
                                    "and check it computes the same function as the pruned one; compare every "
                                    "method's accuracy against its cost; time the forms.", [
    code('''
import torch

from deap_lib.absorb import absorb, prune, to_deploy, verify
from deap_lib.complexity import measure_latency
from deap_lib.export import load_compact
from deap_lib.methods.runner import Data

teacher_dir = study.teacher(seed)
deap = study.run("deap", seed)
cfg = study.config("deap")
pc = cfg.prune
input_size = (3, *cfg.model.input_size)
student = load_compact(str(Path(deap["run_dir"]) / "model.pt"))  # trained PCP student, before the cut
absorbed_nb, report = absorb(student, pc.threshold, pc.min_channels, relative=pc.relative, input_size=input_size)
pruned_nb = prune(student, pc.threshold, pc.min_channels, relative=pc.relative).eval()
images = next(iter(Data(cfg).query))[0][:16]
check = verify(pruned_nb, absorbed_nb, images)
print(report.table())
print(f"equivalence on {len(images)} query images: max |pruned - absorbed| = {check['max_abs']:.2e} "
      f"(relative {check['max_rel']:.2e})")
print("the run's own check (pruned + BN re-calibrated vs absorbed):", deap["absorb_verification"])'''),
    code('''
three = pd.DataFrame([{"form": f, "mAP % [95% CI]": deap["forms"][f]["mAP_text"], "Rank-1 %": deap["forms"][f]["rank1"],
                       "params (M)": deap["forms"][f]["params_no_classifier"] / 1e6,
                       "MACs (M)": deap["forms"][f]["macs"] / 1e6}
                      for f in ("unpruned", "pruned", "absorbed")])
R.save_table(three, out, "04_3_three_forms", caption="DEAP student: unpruned / pruned (PCP units kept) / absorbed"
             + (" (gradual pruning: `unpruned` already has the zeroed channels, not yet removed)"
                if study.config("deap").prune.schedule == "gradual" else ""))
three'''),
    code('''
runs = study.load_runs()
runs = runs[runs["seed"] == seed]  # other seeds' runs: the seed statistics of notebook 02
table = R.main_table(runs)
R.save_table(table, out, "04_1_main_table", markdown_df=R.format_main_table(table),
             caption=f"Teacher vs every method's deployed model (seed {seed}): accuracy, size, MACs and the "
                     "paired-bootstrap mAP difference to the teacher")
R.format_main_table(table)'''),
    code('''
dep = runs[runs["deployed"]].copy()
dep["macs_m"] = dep["macs"] / 1e6
fig, ax = plt.subplots(figsize=(7, 4.2))
for method, g in dep.groupby("method"):
    ax.errorbar(g["macs_m"], g["mAP"], yerr=[g["mAP"] - g["mAP_low"], g["mAP_high"] - g["mAP"]], fmt="o",
                capsize=2, label=method)
pts = dep.sort_values(["macs_m", "mAP"], ascending=[True, False])
front, best = [], -np.inf
for _, r in pts.iterrows():
    if r["mAP"] > best:
        front.append((r["macs_m"], r["mAP"]))
        best = r["mAP"]
ax.step(*zip(*front), where="post", c="k", lw=0.8, ls="--", label="Pareto front")
ax.set(xlabel="MACs (M, one image)", ylabel="mAP (%) [95% CI]", title="accuracy vs cost of every run")
ax.legend(fontsize=7, ncol=2)
R.save_figure(fig, out, "04_2_pareto", caption=f"mAP vs MACs of every run's deployed model, seed {seed} (dashed: "
              "Pareto front)")'''),
    code('''
pruning = [m for m in (study.metrics(d) for d in runs.loc[runs["form"] == "absorbed", "run_dir"].unique())
           if m.get("kept_widths")]
labels, rows = [], []
for m in sorted(pruning, key=lambda m: m["run"]):
    k, o = np.array(m["kept_widths"], float), np.array(m["original_widths"], float)
    for j, side in enumerate(("C1 (pruner 1)", "C3 (pruner 2)")):
        labels.append(f"{m['run']}: {side}")
        rows.append(k[:, j] / o[:, j])
fig, ax = plt.subplots(figsize=(9, 0.35 * len(rows) + 1.5))
im = ax.imshow(np.array(rows), aspect="auto", cmap="magma", vmin=0, vmax=1)
ax.set_yticks(range(len(labels)), labels, fontsize=7)
ax.set(xlabel="bottleneck block", title="share of channels kept per block")
fig.colorbar(im, ax=ax, label="kept / original")
R.save_figure(fig, out, "04_4_kept_channels", caption="Kept channels per block of every pruning run")'''),
    code('''
teacher_model = load_compact(str(Path(teacher_dir) / "model.pt"))
models = {"teacher": teacher_model, "unpruned": to_deploy(student), "pruned": pruned_nb,
          "absorbed": load_compact(str(Path(deap["run_dir"]) / "absorbed.pt"))}
from deap_lib.complexity import profile

macs = {k: profile(m, input_size)["macs"] for k, m in models.items()}
lat_rows = []
for bs in latency_batch_sizes:
    per = {k: [] for k in models}
    for r in range(latency_rounds):  # round-robin: load drifts hit every model alike
        for k, m in models.items():
            per[k].append(measure_latency(m, input_size, bs, threads=study.threads, warmup=2 if r == 0 else 1,
                                          repeats=3)["median_ms"])
    med = {k: float(np.median(v)) for k, v in per.items()}
    for k in models:
        lat_rows.append({"model": k, "batch": bs, "median_ms": med[k], "speedup_vs_teacher": med["teacher"] / med[k],
                         "macs_m": macs[k] / 1e6, "macs_ratio": macs["teacher"] / macs[k]})
lat = pd.DataFrame(lat_rows)
R.save_table(lat, out, "04_5_latency", caption=f"CPU latency ({study.threads} thread(s), median of {latency_rounds} "
             "round-robin rounds) of the teacher and the DEAP student's forms")
lat'''),
    code('''
d = table[table["run"] == Path(deap["run_dir"]).name].iloc[0]
R.record(out, "04_absorb_and_plots", {
    "absorb_max_abs": check["max_abs"], "absorb_max_rel": check["max_rel"],
    "run_absorb_max_rel": deap["absorb_verification"]["max_rel"], "kept_fraction": report.kept_fraction(),
    "teacher_mAP": float(table.loc[table["method"] == "teacher", "mAP"].iloc[0]), "deap_mAP": float(d["mAP"]),
    "deap_params_reduction_pct": float(d["params_reduction_pct"]), "deap_macs_reduction_pct": float(d["macs_reduction_pct"]),
    "deap_d_mAP": float(d["d_mAP"]), "deap_d_mAP_low": float(d["d_mAP_low"]), "deap_d_mAP_high": float(d["d_mAP_high"]),
    "methods": sorted(table["method"].unique()), "n_runs": int(len(table)),
    "latency_speedup": {f"{r.model}@{r.batch}": float(r.speedup_vs_teacher) for r in lat.itertuples()},
})'''),
], "latency_batch_sizes = (1, 16)\nlatency_rounds = 5")


def build(name: str) -> nbformat.NotebookNode:
    title, cells, extra = NOTEBOOKS[name]
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    params = PARAMETERS + ("\n" + extra if extra else "")
    out = [nbformat.v4.new_markdown_cell(title), nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}),
           nbformat.v4.new_code_cell(SETUP)]
    for kind, src in cells:
        out.append(nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src))
    for i, c in enumerate(out):
        c["id"] = f"{name[:2]}-{i:02d}"
    nb.cells = out
    nbformat.validate(nb)
    return nb


def text(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a notebook differs from its source here")
    args = ap.parse_args(argv)
    stale = []
    for name in NOTEBOOKS:
        path = HERE / f"{name}.ipynb"
        want = text(build(name))
        if args.check:
            if not path.is_file() or path.read_text() != want:
                stale.append(path.name)
            continue
        if not path.is_file() or path.read_text() != want:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(want)
            tmp.replace(path)
            print(f"wrote {path}")
    if stale:
        print(f"out of date (run python notebooks/_build.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
