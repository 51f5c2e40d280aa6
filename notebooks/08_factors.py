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
# # 08 - What the comparison depends on: the start, the student's length, the order of KD and pruning
#
# Notebook 02 compares every method from one start (the pre-training) on one schedule. Here the three
# factors that the earlier regime confounded with the methods are measured on their own: the start
# (pre-trained weights against the teacher's, a 2x3 with DEAP, the naive arm `kd_slim` and `thinned_kd` at
# DEAP's learned budget), the student's length (a quarter, half and all of the schedule: does the gap to the
# teacher close with training?) and the two-stage baselines (KD then pruning, pruning then KD, each stage a
# full schedule), against DEAP. One seed; test-split mAP, 95 % paired bootstrap intervals over queries.

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
full = False          # the full study (this notebook belongs to it)
target_macs = None    # budget of thinned_kd and the two-stage baselines; None: DEAP's learned one
lengths = (0.25, 0.5) # other student schedules, fractions of the preset's epochs (at least 2 epochs each)

# %%
import matplotlib.pyplot as plt
import pandas as pd

from deap_lib import plots as P
from deap_lib import results as R
from deap_lib.study import Study, deployed_form, macs_kept

study = Study.from_notebook(globals())  # paths relative to the repository root
study

# %% [markdown]
# ## The start as a factor
#
# **Table 08_1**: DEAP, `kd_slim` and `thinned_kd` (at DEAP's learned budget) from the pre-trained weights
# (notebook 02's start for every method) and from the teacher's weights, and the paired difference
# teacher-start minus pre-trained start: what inherited training is worth to each method. **Figure 08_2**
# shows the six models. The earlier regime started `thinned_kd` from the teacher and DEAP from the
# pre-training; this table measures how much of that comparison was the start.

# %%
from deap_lib.evaluation import paired_bootstrap

teacher, deap = study.run_many([("teacher", seed, {}), ("deap", seed, {})])
budget = float(target_macs) if target_macs is not None else study.learned_budget(seed)
from_teacher = {"student_init": "checkpoint", "pretrained_path": study.teacher_path(seed)}
ARMS = {"deap": {}, "kd_slim": {}, "thinned_kd": {"prune.target_macs": budget}}
START = {"pre-trained": {"deap": {}, "kd_slim": {}, "thinned_kd": {"args.init_from_teacher": False}},
         "teacher": {"deap": from_teacher, "kd_slim": from_teacher, "thinned_kd": {"args.init_from_teacher": True}}}
keys = [(m, s) for m in ARMS for s in START]
ms = dict(zip(keys, study.run_many([(m, seed, {**ARMS[m], **START[s][m]}) for m, s in keys])))
rows = []
for m in ARMS:
    runs_ = {s: ms[(m, s)] for s in START}
    forms = {s: r["forms"][deployed_form(r["forms"])] for s, r in runs_.items()}
    d = paired_bootstrap(*(R.load_per_query(runs_[s]["run_dir"], deployed_form(runs_[s]["forms"]))
                           for s in ("teacher", "pre-trained")))["mAP"]
    rows.append({"method": m, "start": "pre-trained", "mAP": forms["pre-trained"]["mAP"],
                 "mAP_low": forms["pre-trained"]["mAP_low"], "mAP_high": forms["pre-trained"]["mAP_high"],
                 "macs_m": forms["pre-trained"]["macs"] / 1e6, "recorded_start": runs_["pre-trained"]["start"]})
    rows.append({"method": m, "start": "teacher", "mAP": forms["teacher"]["mAP"], "mAP_low": forms["teacher"]["mAP_low"],
                 "mAP_high": forms["teacher"]["mAP_high"], "macs_m": forms["teacher"]["macs"] / 1e6,
                 "recorded_start": runs_["teacher"]["start"], "d_teacher_start": 100 * d["diff"],
                 "d_low": 100 * d["low"], "d_high": 100 * d["high"]})
starts = pd.DataFrame(rows)
R.save_table(starts, out, "08_1_start_factor", caption=f"Start as a factor (seed {seed}, DEAP's budget {budget:.1%} "
             "of the MACs for thinned_kd): test-split mAP from the pre-trained and from the teacher's weights; "
             "d_teacher_start: teacher start minus pre-trained start, paired bootstrap")
fig, ax = plt.subplots(figsize=(7, 3.6))
labels = [f"{r['method']}\n{r['start']}" for r in starts.to_dict("records")]
P.bars_with_ci(ax, labels, starts["mAP"], starts["mAP_low"], starts["mAP_high"],
               colors=["tab:blue" if s == "pre-trained" else "tab:orange" for s in starts["start"]])
ax.axhline(float(teacher["forms"]["teacher"]["mAP"]), ls="--", c="k", lw=1, label="teacher")
ax.set(ylabel="mAP (%), test split [95% CI]", title="pre-trained (blue) vs teacher's weights (orange)")
ax.legend()
R.save_figure(fig, out, "08_2_start_factor", caption="Test-split mAP of each method from the pre-trained and from "
              "the teacher's weights")
starts

# %% [markdown]
# ## The student's length
#
# **Table 08_3** / **Figure 08_4**: DEAP, `kd_slim` and `thinned_kd` (pre-trained start) trained for a quarter,
# half and all of the schedule (the learning-rate phases are fractions of each run, so each is a complete
# shorter schedule; the teacher keeps its full one). DEAP's and `kd_slim`'s compression is learned, so it
# changes with the length too (MACs kept in the table). A gap to the teacher that shrinks with length says
# the comparison at one length measures training as much as the method.

# %%
E = study.config("deap").optim.epochs
lens = sorted({max(2, round(E * x)) for x in lengths} | {E})  # a schedule needs at least 2 epochs
lkeys = [(m, e) for m in ARMS for e in lens]
lspecs = [(m, seed, {**ARMS[m], **START["pre-trained"][m], **({"optim.epochs": e} if e != E else {})})
          for m, e in lkeys]
lm = dict(zip(lkeys, study.run_many(lspecs)))
lrows = []
for (m, e), r in lm.items():
    f = r["forms"][deployed_form(r["forms"])]
    frac = macs_kept(r["forms"], full_macs=teacher["forms"]["teacher"]["macs"])
    lrows.append({"method": m, "epochs": e, "mAP": f["mAP"], "mAP_low": f["mAP_low"], "mAP_high": f["mAP_high"],
                  "val_mAP": f.get("val_mAP"), "macs_kept": frac,
                  "d_teacher": f["mAP"] - teacher["forms"]["teacher"]["mAP"]})
length = pd.DataFrame(lrows)
R.save_table(length, out, "08_3_student_length", caption=f"Students at {', '.join(map(str, lens))} epochs (the "
             f"teacher {E}): test-split mAP, MACs kept and the difference to the teacher")
fig, ax = plt.subplots(figsize=(6.5, 3.8))
for m, g in length.groupby("method"):
    ax.errorbar(g["epochs"], g["mAP"], yerr=[g["mAP"] - g["mAP_low"], g["mAP_high"] - g["mAP"]], fmt="-o",
                capsize=2, label=m)
ax.axhline(float(teacher["forms"]["teacher"]["mAP"]), ls="--", c="k", lw=1, label=f"teacher ({E} epochs)")
ax.set(xlabel="student epochs", ylabel="mAP (%), test split [95% CI]", title="accuracy against the student's length")
ax.legend(fontsize=8)
R.save_figure(fig, out, "08_4_student_length", caption="Test-split mAP of each method against its number of "
              "epochs (dashed: the teacher)")
length

# %% [markdown]
# ## KD and pruning one after the other
#
# **Table 08_5**: the two-stage baselines at DEAP's budget, each stage a full schedule (so they train twice
# as long as DEAP): `kd_then_np` (distil, then prune with the pruners and no teacher) and `np_then_kd`
# (prune, then distil the pruned network), against DEAP (paired bootstrap). The paper's dilemma predicts both
# lose to DEAP at equal cost; here they also get twice the training.

# %%
two = study.run_many([(m, seed, {"prune.target_macs": budget, "prune.bn_recalib_batches": 20})
                      for m in ("kd_then_np", "np_then_kd")])
ref = R.load_per_query(deap["run_dir"], "absorbed")
seq = P.paired_vs(ref, {m["method"]: R.load_per_query(m["run_dir"], deployed_form(m["forms"])) for m in two})
seq["mAP"] = [m["forms"][deployed_form(m["forms"])]["mAP"] for m in two]
seq["macs_m"] = [m["forms"][deployed_form(m["forms"])]["macs"] / 1e6 for m in two]
R.save_table(seq, out, "08_5_two_stage", caption=f"DEAP (absorbed) minus each two-stage baseline at DEAP's budget "
             f"({budget:.1%} of the MACs; each stage a full schedule), test-split mAP, paired bootstrap")
seq

# %%
R.record(out, "08_factors", {
    "budget": budget, "epochs": E, "lengths": lens,
    "start": starts.astype(object).where(starts.notna(), None).to_dict("records"),  # no difference on a reference row
    "length": length.to_dict("records"),
    "two_stage": seq.to_dict("records"),
})
