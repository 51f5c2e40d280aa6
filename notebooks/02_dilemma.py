# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 - The KD + NP dilemma
#
# Knowledge distillation alone (kd), network pruning alone (np), their naive combinations (kd_np_direct; with `sequential`, by default in the full study, also kd_then_np and np_then_kd) and DEAP, all pruning methods cut to the same MAC budget (`target_macs`, a fraction of the unpruned student's MACs).

# %% tags=["parameters"]
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
full = False          # the full study's extras (ablations)
target_macs = None    # MAC budget of every pruning method here (fraction of the unpruned student);
                      # None: the preset's (prune.target_macs), or 0.3 where the preset cuts by threshold
sequential = None     # also kd_then_np and np_then_kd (None: only when full)
seeds = None         # seeds of the main methods (None: seed, seed+1, seed+2 when full, else seed)

# %%
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from deap_lib import plots as P
from deap_lib import results as R
from deap_lib.study import Study, deployed_form

study = Study.from_notebook(globals())  # paths relative to the repository root
study

# %% [markdown]
# ## The dilemma at one budget
#
# **Table 02_1**: every method's deployed model (absorbed for the pruning methods), all pruning methods cut to
# the same MAC budget, with mAP and its 95 % bootstrap interval over query identities and the paired
# difference to the teacher. The paper's dilemma: knowledge distillation wants an untrained student, network
# pruning a well-trained one, so the naive combinations (`kd_np_direct` trained jointly, `kd_then_np`,
# `np_then_kd` one after the other) lose much of what KD alone gains; DEAP is claimed to keep it (DEAP >
# every naive combination, at the teacher's accuracy). Compare the pruning rows with `kd` (what KD reaches
# without compression) and `np` (pruning without KD).

# %%
if sequential is None:  # two more training runs: by default only in the full study (time budget)
    sequential = full
PRUNING = ["np"] + (["kd_then_np", "np_then_kd"] if sequential else []) + ["kd_np_direct", "deap"]
if target_macs is None:  # the preset's own budget (cpu: its target_macs), else 30 %
    target_macs = study.config("deap").prune.target_macs or 0.3
seeds = study.main_seeds(seeds, full)  # the full study repeats the main runs with three seeds
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
R.format_main_table(table)

# %% [markdown]
# **Figure 02_2** shows the same mAPs as bars (grey: references, blue: compressed baselines, red: DEAP;
# dashed: the teacher). Bars whose intervals overlap are not clearly different at this test-set size.

# %%
fig, ax = plt.subplots(figsize=(8, 3.6))
P.bars_with_ci(ax, table["method"], table["mAP"], table["mAP_low"], table["mAP_high"],
               colors=P.method_colors(table["method"]))
ax.axhline(float(table.loc[table["method"] == "teacher", "mAP"].iloc[0]), ls="--", c="k", lw=1, label="teacher")
ax.set(ylabel="mAP (%) [95% CI]", title=f"deployed models, pruning methods at {target_macs:.0%} MACs")
ax.legend()
R.save_figure(fig, out, "02_2_dilemma_map", caption="mAP with 95 % intervals of every method (pruning methods at "
              "the same MAC budget)")

# %% [markdown]
# **Figure 02_3**: mAP over training epochs of every run (training-form model, before the final cut). The
# paper's prototype notes (docs/study.rst §Scaling the recipe down) warn that mAP dips mid-training under KD and recovers, so only the
# final points are comparable; a curve still climbing at the end says the schedule, not the method, limits
# that run.

# %%
fig, ax = plt.subplots(figsize=(8, 3.6))
P.eval_curves(ax, {m["method"]: study.train_log(m["run_dir"]) for m in ms})
ax.set(xlabel="epoch (two-stage methods: both stages)", ylabel="mAP (%) of the training-form model",
       title="mAP over epochs")
ax.legend(fontsize=7, ncol=2)
R.save_figure(fig, out, "02_3_dilemma_curves", caption="mAP over training epochs (before the final cut)")

# %% [markdown]
# **Table 02_8**: have the students reached their plateau? The study's rule: a run's curve has flattened when
# its last two evaluations differ by less than 1 point (`delta`, last minus previous). The uncompressed KD
# student above all must be flat; otherwise the comparison is about the schedule, not the methods.

# %%
plateaus = pd.DataFrame([{"method": m["method"], **R.plateau(study.train_log(m["run_dir"]))} for m in ms])
R.save_table(plateaus, out, "02_8_plateau", caption="Last two evaluations of every run (mAP %) and their "
             f"difference; flat: |delta| < {R.PLATEAU_POINTS:g} point")
plateaus

# %% [markdown]
# ## Is DEAP better than each alternative?
#
# **Table 02_4**: DEAP's absorbed model minus every other deployed model, paired bootstrap over query
# identities (same queries, same identity draws); `p_better` is the share of resamples in which DEAP scores
# higher. The verdict is "better" / "worse" only when the 95 % interval excludes zero. This is one seed: a
# single seed cannot rank close methods (see the seed table below).

# %%
by_method = {m["method"]: m for m in ms}
ref = R.load_per_query(by_method["deap"]["run_dir"], "absorbed")
vs = P.paired_vs(ref, {m: R.load_per_query(by_method[m]["run_dir"], deployed_form(by_method[m]["forms"]))
                       for m in table["method"] if m != "deap"})
R.save_table(vs, out, "02_4_deap_vs_each", caption="DEAP (absorbed) minus each other deployed model: mAP difference "
             f"in points with its 95 % paired-bootstrap interval (seed {seed})")
vs

# %% [markdown]
# ## Across seeds
#
# With several `seeds` (by default in the full study) every main method is trained with each seed
# (initialisation, batch order and augmentations change; each distillation run uses the teacher of its own
# seed). **Table 02_5**: mean and sample standard deviation over seeds, the Student-t 95 % interval of the
# mean, and the difference to the same-seed teacher. **Table 02_6**: DEAP minus each method seed by seed
# (the paired design removes the seed-to-seed spread both share). **Figure 02_7**: every seed's deployed
# mAP (dots) and the mean with its t interval (diamonds). Three seeds give wide intervals: a difference is
# called only when its interval excludes zero; these are the numbers to cite for DEAP vs the naive
# combinations.

# %%
seed_rec = {}
if len(seeds) > 1:
    over = R.seed_summary(all_runs, methods=MAIN)
    R.save_table(over, out, "02_5_seeds", markdown_df=R.format_seed_summary(over),
                 caption=f"Main methods over seeds {', '.join(map(str, seeds))}: mAP mean ± sample std, the 95 % "
                         "t interval of the mean, and the difference to the teacher of the same seed")
    diffs = R.seed_differences(all_runs, "deap", methods=[m for m in MAIN if m != "deap"])
    diffs["verdict"] = [P.verdict(lo, hi) for lo, hi in zip(diffs["d_ci_low"], diffs["d_ci_high"])]
    R.save_table(diffs, out, "02_6_deap_vs_each_seeds", caption="DEAP (absorbed) minus each main method, seed by "
                 "seed (mAP points): mean, sample std, 95 % t interval over seeds, seeds DEAP wins")
    fig, ax = plt.subplots(figsize=(8, 3.6))
    P.seed_errorbars(ax, all_runs, over, MAIN)
    ax.set(title=f"seeds {', '.join(map(str, seeds))}: runs (dots), mean with 95 % t interval")
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
    print("one seed: the seed statistics are made in the full study (or with seeds=[0, 1, 2])")

# %% [markdown]
# The record of this notebook (`results/records/02_dilemma.json`) feeds the README's headline and verdicts.

# %%
rec = {m: {k: float(v) for k, v in table.loc[table["method"] == m,
           ["mAP", "mAP_low", "mAP_high", "d_mAP", "d_mAP_low", "d_mAP_high", "macs_fraction", "macs_m"]]
           .iloc[0].items()} for m in table["method"]}
best_baseline = max(rec[m]["mAP"] for m in PRUNING if m != "deap")
R.record(out, "02_dilemma", {"target_macs": float(target_macs), "methods": rec,
                             "deap_vs": {r["deap vs"]: {k: (float(r[k]) if k != "verdict" else r[k])
                                                        for k in ("d_mAP", "d_low", "d_high", "p_better", "verdict")}
                                         for r in vs.to_dict("records")},
                             "deap_minus_best_pruning_baseline": rec["deap"]["mAP"] - best_baseline,
                             "seed_stats": seed_rec,
                             "plateau": {r["method"]: {k: r[k] for k in ("last", "previous", "delta", "flat")}
                                         for r in plateaus.to_dict("records")}})
