# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 - The KD + NP dilemma, on one schedule and one start
#
# The teacher and every student train the same schedule from the same pre-trained start. DEAP prunes as the
# paper does (group lasso on its pruners from the first iteration, one threshold cut at the end), so its
# compression is what it learns; the naive combination of KD and pruning (`kd_slim`: KL + network slimming)
# gets the same number of probes of its sparsity weight, chosen by the same rule on the validation split.
# The full study adds the sweep that chose both lambdas, DEAP's budget for every other method and three
# seeds with equivalence verdicts.

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
full = False          # the full study's extras
target_macs = None    # budget of the equal-MACs comparisons (fraction of the unpruned MACs); None: DEAP's learned one
lambdas = None        # sparsity weights probed on the validation split for DEAP and kd_slim (None: the grid when full)
seeds = None          # seeds of the main methods (None: seed, seed+1, seed+2 when full, else seed)
margin = 1.0          # equivalence margin of the "no loss" verdict, mAP points

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from deap_lib import plots as P
from deap_lib import results as R
from deap_lib.study import Study, deployed_form, macs_kept

study = Study.from_notebook(globals())  # paths relative to the repository root
study

# %% [markdown]
# ## DEAP's learned compression
#
# **Table 02_1**: the teacher (here also the plain student: same architecture, start, schedule and seed), the
# uncompressed KD student (DEAP's losses, no pruning), the naive combination `kd_slim` and DEAP, all trained
# for the same number of epochs from the same pre-trained weights; mAP on the test split with its 95 % bootstrap interval over query identities,
# the paired difference to the teacher, the share of the MACs each deployed model keeps, and the
# validation-split mAP that every choice in the study reads. The paper's claim: DEAP removes ~72 % of the
# MACs at the teacher's accuracy; here its compression is whatever the lasso learns at the lambda chosen on
# the validation split (the cpu preset's `loss.lasso1`, see the sweep below).

# %%
if lambdas is None:
    lambdas = list(R.LAMBDA_GRID) if full else []
seeds = study.main_seeds(seeds, full)  # the full study repeats the main runs with three seeds
# the plain student, unless it would train exactly as the teacher (then it is the teacher, notebook 01)
MAIN = ["teacher"] + ([] if study.student_is_teacher(seed) else ["student"]) + ["kd", "kd_slim", "deap"]
ms = study.run_many([(m, seed, {}) for m in MAIN])
by = {m["method"]: m for m in ms}
names = {Path(m["run_dir"]).name for m in ms}
runs = study.load_runs()
runs = runs[runs["run"].isin(names)]
table = R.main_table(runs, methods=MAIN)
by_run = {Path(m["run_dir"]).name: m["forms"] for m in ms}


def val_map(forms):
    return forms[deployed_form(forms)].get("val_mAP")


table["macs_fraction"] = [macs_kept(by_run[r]) for r in table["run"]]
table["val_mAP"] = [val_map(by_run[r]) for r in table["run"]]
learned = macs_kept(by["deap"]["forms"])
budget = float(target_macs) if target_macs is not None else learned
R.save_table(table, out, "02_1_dilemma_table", markdown_df=R.format_main_table(table).assign(
                 **{"MACs kept": [f"{v:.1%}" for v in table["macs_fraction"]],
                    "val mAP %": [f"{v:.1f}" if v is not None else "" for v in table["val_mAP"]]}),
             caption=f"Deployed models, one schedule ({study.config('deap').optim.epochs} epochs) and one start, "
                     f"seed {seed}: test-split mAP, paired difference to the teacher; DEAP keeps {learned:.1%} of "
                     "the MACs by its own threshold cut")
R.format_main_table(table)

# %% [markdown]
# **Figure 02_2** shows the same test-split mAPs as bars, each labelled with the share of the MACs its model
# keeps (grey: references, blue: compressed baselines, red: DEAP; dashed: the teacher); methods that keep
# different shares are compared at equal MACs in the full study (Table 02_11). Bars whose intervals overlap are not clearly different at this test-set size.

# %%
fig, ax = plt.subplots(figsize=(8, 3.6))
P.bars_with_ci(ax, [f"{m}\n{k:.0%} of the MACs" for m, k in zip(table["method"], table["macs_fraction"])],
               table["mAP"], table["mAP_low"], table["mAP_high"], colors=P.method_colors(table["method"]))
ax.axhline(float(table.loc[table["method"] == "teacher", "mAP"].iloc[0]), ls="--", c="k", lw=1, label="teacher")
ax.set(ylabel="mAP (%), test split [95% CI]", title="deployed models, one schedule and one start")
ax.legend()
R.save_figure(fig, out, "02_2_dilemma_map", caption="Test-split mAP with 95 % intervals of every deployed model")

# %% [markdown]
# **Figure 02_3**: mAP on the validation split over training epochs of every run (training-form model,
# before the final cut). A curve still climbing at its last point says the schedule, not the method, limits
# that run. **Table 02_8** gives the last two evaluations and their difference; the last falls at the end of
# the cosine schedule, so a flat end is weak evidence of convergence: the doubled-schedule teacher (notebook
# 01) and the student-length curve (below, full study) are the checks that count.

# %%
fig, ax = plt.subplots(figsize=(8, 3.6))
P.eval_curves(ax, {m["method"]: study.train_log(m["run_dir"]) for m in ms})
ax.set(title="mAP over epochs (training form)")
ax.legend(fontsize=7, ncol=2)
R.save_figure(fig, out, "02_3_dilemma_curves", caption="Validation-split mAP over training epochs (before the cut)")
plateaus = pd.DataFrame([{"method": m["method"], **R.plateau(study.train_log(m["run_dir"]))} for m in ms])
R.save_table(plateaus, out, "02_8_plateau", caption="Last two evaluations of every run (validation-split mAP %) "
             f"and their difference; flat: |delta| < {R.PLATEAU_POINTS:g} point")
plateaus

# %% [markdown]
# **Table 02_4**: DEAP's absorbed model minus every other deployed model of this seed, paired bootstrap over
# query identities; the verdict is "better" / "worse" only when the 95 % interval excludes zero. One seed
# cannot rank close methods (see the seeds below).

# %%
ref = R.load_per_query(by["deap"]["run_dir"], "absorbed")
vs = P.paired_vs(ref, {m: R.load_per_query(by[m]["run_dir"], deployed_form(by[m]["forms"]))
                       for m in MAIN if m != "deap"})
R.save_table(vs, out, "02_4_deap_vs_each", caption="DEAP (absorbed) minus each other deployed model: test-split mAP "
             f"difference in points with its 95 % paired-bootstrap interval (seed {seed})")
vs

# %% [markdown]
# ## The sparsity weight, chosen on the validation split (full study)
#
# DEAP's lambda (both pruners) and slimming's lambda get the same grid and the same rule: the largest lambda
# whose validation-split mAP stays within `margin` points of the teacher's. **Table 02_9** lists every probe
# (the test-split mAP beside it, never read by the rule); **Figure 02_10** plots each probe's test-split mAP
# against the share of MACs it keeps: each method's accuracy-compression curve, traced by its own knob.

# %%
choice, probes = {}, pd.DataFrame()
if lambdas:
    key = {"deap": ("loss.lasso1", "loss.lasso2"), "kd_slim": ("loss.lasso1",)}
    sweep = [(m, seed, {k: float(lam) for k in key[m]}) for m in ("deap", "kd_slim") for lam in lambdas]
    sm = study.run_many(sweep)
    t_val = val_map(by["teacher"]["forms"])
    rows = []
    for (m, _, ov), r in zip(sweep, sm):
        f = r["forms"][deployed_form(r["forms"])]
        rows.append({"method": m, "lam": ov["loss.lasso1"], "val_mAP": f.get("val_mAP"), "mAP": f["mAP"],
                     "mAP_low": f["mAP_low"], "mAP_high": f["mAP_high"], "macs_fraction": macs_kept(r["forms"]),
                     "run": Path(r["run_dir"]).name})
    probes = pd.DataFrame(rows)
    for m in ("deap", "kd_slim"):
        choice[m] = R.choose_on_validation(probes[probes["method"] == m].to_dict("records"), t_val, margin)
    probes["chosen"] = [choice[r["method"]]["lam"] == r["lam"] for r in probes.to_dict("records")]
    R.save_table(probes, out, "02_9_lambda_choice", markdown_df=probes.assign(lam=[f"{v:g}" for v in probes["lam"]]),
                 caption=f"Sparsity-weight probes (seed {seed}): validation-split "
                 f"mAP (the rule: {choice['deap']['rule']}), test-split mAP and MACs kept; chosen: DEAP "
                 f"{choice['deap']['lam']:g}, kd_slim {choice['kd_slim']['lam']:g}")
    fig, ax = plt.subplots(figsize=(7, 4))
    for m, c in (("deap", "tab:red"), ("kd_slim", "tab:blue")):
        g = probes[probes["method"] == m].sort_values("macs_fraction")
        ax.errorbar(100 * g["macs_fraction"], g["mAP"], yerr=[g["mAP"] - g["mAP_low"], g["mAP_high"] - g["mAP"]],
                    fmt="-o", c=c, capsize=2, label=f"{m} (lambda {', '.join(f'{v:g}' for v in g['lam'])})")
        ch = g[g["chosen"]]
        ax.scatter(100 * ch["macs_fraction"], ch["mAP"], s=160, facecolors="none", edgecolors=c, zorder=5,
                   label=f"{m}: lambda chosen on the validation split")
    ax.axhline(float(by["teacher"]["forms"]["teacher"]["mAP"]), ls="--", c="k", lw=1, label="teacher")
    ax.axhline(float(by["kd"]["forms"]["student"]["mAP"]), ls=":", c="tab:gray", lw=1, label="kd (uncompressed)")
    ax.set(xlabel="MACs kept (% of the unpruned network)", ylabel="mAP (%), test split [95% CI]",
           title="accuracy against compression, one point per lambda (circled: chosen on validation)")
    ax.legend(fontsize=7)
    R.save_figure(fig, out, "02_10_lambda_sweep", caption="Test-split mAP against MACs kept for every sparsity "
                  "weight probed (circled: the one the validation rule chose)")
    display(probes)
else:
    print("lambdas=[]: the sweep runs in the full study (or pass lambdas=[...])")

# %% [markdown]
# ## Every method at DEAP's budget (full study)
#
# **Table 02_11**: with the budget DEAP learned (`target_macs`, the MACs share its absorbed model keeps),
# every other compression method is cut to it from the same start: `kd_slim` (its chosen lambda, the
# smallest scale factors cut globally until the budget holds), `thinned_kd` (one width multiplier, trained
# by KD from the pre-trained weights), `kd_np_direct` (DEAP's losses with the group lasso on the BN gates
# instead of the pruners: the "PCP vs BN gates" ablation) and `np` (DEAP's pruners, no teacher). A budget
# cut removes channels whose gates are not zero, so these runs re-compute BN statistics after it (20
# training batches; DEAP's own threshold cut does not). DEAP minus each, paired bootstrap.

# %%
at_budget, vs_budget = pd.DataFrame(), pd.DataFrame()
if full or target_macs is not None:
    # a budget cut removes channels whose gates are not zero: BN statistics re-computed after it (20 batches)
    b = {"prune.target_macs": round(budget, 4), "prune.bn_recalib_batches": 20}
    slim_lam = {"loss.lasso1": choice["kd_slim"]["lam"]} if choice else {}
    specs = [("kd_slim", seed, {**b, **slim_lam}),
             ("thinned_kd", seed, {"prune.target_macs": b["prune.target_macs"], "args.init_from_teacher": False}),
             ("kd_np_direct", seed, b), ("np", seed, b)]
    bm = study.run_many(specs)
    names_b = {Path(m["run_dir"]).name for m in bm} | {Path(by[m]["run_dir"]).name for m in ("teacher", "deap")}
    rb = study.load_runs()
    at_budget = R.main_table(rb[rb["run"].isin(names_b)])
    at_budget["macs_fraction"] = at_budget["macs_m"] / float(table.loc[table["method"] == "kd", "macs_m"].iloc[0])
    R.save_table(at_budget, out, "02_11_at_deap_budget", markdown_df=R.format_main_table(at_budget),
                 caption=f"Every compression method at DEAP's learned budget ({budget:.1%} of the MACs), one start "
                         f"and one schedule, seed {seed}")
    vs_budget = P.paired_vs(ref, {m["method"]: R.load_per_query(m["run_dir"], deployed_form(m["forms"])) for m in bm})
    R.save_table(vs_budget, out, "02_12_deap_vs_each_at_budget", caption="DEAP (absorbed) minus each method at its "
                 "budget: test-split mAP difference with its 95 % paired-bootstrap interval")
    display(R.format_main_table(at_budget), vs_budget)
else:
    print("the equal-MACs comparisons run in the full study (or pass target_macs)")

# %% [markdown]
# ## Across seeds: is the loss within one point? (full study)
#
# Each seed draws its own pre-training, teacher and students. **Table 02_5**: mean and sample standard
# deviation over seeds and the Student-t 95 % interval of the mean. **Table 02_6**: every compressed model
# against the teacher of its seed (the paper's claim) and against the uncompressed KD student of its seed
# (what the compression itself costs): the per-seed differences, the two one-sided tests of equivalence
# within ±`margin` points (TOST, alpha 0.05: "equivalent" when the 90 % interval lies inside the margin),
# and otherwise "better" / "worse" when the 95 % interval excludes zero, else "inconclusive".
# **Figure 02_7**: every seed's deployed mAP (dots) and the mean with its t interval (diamonds).

# %%
seed_rec, verdicts = {}, pd.DataFrame()
if len(seeds) > 1:
    slim_lam = {"loss.lasso1": choice["kd_slim"]["lam"]} if choice else {}
    all_ms = ms + study.run_many([(m, s, slim_lam if m == "kd_slim" else {}) for s in seeds if s != seed
                                  for m in MAIN])
    all_runs = study.load_runs()
    all_runs = all_runs[all_runs["run"].isin({Path(m["run_dir"]).name for m in all_ms})]
    over = R.seed_summary(all_runs, methods=MAIN)
    R.save_table(over, out, "02_5_seeds", markdown_df=R.format_seed_summary(over),
                 caption=f"Main methods over seeds {', '.join(map(str, seeds))}: test-split mAP mean ± sample std, "
                         "the 95 % t interval of the mean, and the difference to the teacher of the same seed")
    dep = all_runs[all_runs["deployed"].astype(bool)]
    per = {m: {int(r["seed"]): float(r["mAP"]) for _, r in dep[dep["method"] == m].iterrows()} for m in MAIN}
    rows = []
    for m in ("deap", "kd_slim", "kd"):
        for refm in ("teacher", "kd"):
            if m == refm:
                continue
            v = R.verdicts_over_seeds(per[m], per[refm], margin)
            rows.append({"model": m, "against": refm, "per_seed": " ".join(f"{x:+.2f}" for x in v["per_seed"]),
                         **{k: v.get(k) for k in ("mean", "std", "ci_low", "ci_high", "p")}, "verdict": v["verdict"]})
    verdicts = pd.DataFrame(rows)
    R.save_table(verdicts, out, "02_6_verdicts_over_seeds", caption=f"Compressed minus reference over seeds "
                 f"(test-split mAP points): mean, std, 90 % t interval, TOST p-value for equivalence within "
                 f"±{margin:g}, verdict")
    fig, ax = plt.subplots(figsize=(8, 3.6))
    P.seed_errorbars(ax, all_runs, over, MAIN)
    ax.set(ylabel="mAP (%), test split", title=f"seeds {', '.join(map(str, seeds))}: runs (dots), mean with 95 % t interval")
    R.save_figure(fig, out, "02_7_seeds_map", caption="Test-split mAP of every seed's deployed model (dots) and the mean "
                  "over seeds with its 95 % t interval")
    seed_rec = {"seeds": seeds,
                "methods": {r["method"]: {k: r[k] for k in ("n_seeds", "mAP_mean", "mAP_std", "mAP_ci_low",
                                                             "mAP_ci_high", "d_teacher_mean", "d_teacher_std",
                                                             "d_teacher_ci_low", "d_teacher_ci_high", "macs_m",
                                                             "params_m")}
                            for r in over.to_dict("records")},
                "verdicts": verdicts.to_dict("records")}
    display(R.format_seed_summary(over), verdicts)
else:
    print("one seed: the seed statistics and verdicts are made in the full study (or with seeds=[0, 1, 2])")

# %% [markdown]
# The record of this notebook (`records/02_dilemma.json`) feeds the README's headline.

# %%
rec = {m: {k: float(v) for k, v in table.loc[table["method"] == m,
           ["mAP", "mAP_low", "mAP_high", "d_mAP", "d_mAP_low", "d_mAP_high", "macs_fraction", "macs_m",
            "params_reduction_pct", "macs_reduction_pct"]]
           .iloc[0].items()} for m in table["method"]}
R.record(out, "02_dilemma", {
    "epochs": int(by["deap"]["config"]["optim"]["epochs"]),
    "teacher_epochs": int(by["teacher"]["config"]["optim"]["epochs"]),
    "deap_lambda": float(by["deap"]["config"]["loss"]["lasso1"]), "deap_macs_kept": learned, "budget": budget,
    "methods": rec, "val_mAP": {m: val_map(by[m]["forms"]) for m in MAIN},
    "deap_vs": {r["deap vs"]: {k: (float(r[k]) if k != "verdict" else r[k])
                               for k in ("d_mAP", "d_low", "d_high", "p_better", "verdict")}
                for r in vs.to_dict("records")},
    "lambda_choice": {m: {k: c[k] for k in ("lam", "val_mAP", "mAP", "macs_fraction", "qualifies", "rule")}
                      for m, c in choice.items()},
    "at_budget": {r["deap vs"]: {k: (float(r[k]) if k != "verdict" else r[k])
                                 for k in ("d_mAP", "d_low", "d_high", "verdict")} for r in vs_budget.to_dict("records")},
    "seed_stats": seed_rec,
    "plateau": {r["method"]: {k: r[k] for k in ("last", "previous", "delta", "flat")}
                for r in plateaus.to_dict("records")},
})
