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
# # 03 - DEAP training
#
# DEAP with the preset's own pruning rule: loss terms, the evolution of the pruner norms, the three evaluated forms; with `full`, ablations of the loss terms and of the proximal pruner update.

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
ablations = None      # the loss-term and proximal-update ablations (None: in the full study)

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from deap_lib import plots as P
from deap_lib import results as R
from deap_lib.study import Study

study = Study.from_notebook(globals())  # paths relative to the repository root
study

# %% [markdown]
# ## DEAP's three forms
#
# DEAP trains a student whose bottlenecks carry two identity-initialised 1x1 pruners around the 3x3 conv
# (the PCP unit); the group lasso drives pruner columns / rows to zero while KL, the per-block feature loss
# (DL) and the asymmetric relation loss (ARKD) keep the teacher's knowledge. **Table 03_1** lists the forms
# the paper evaluates (docs/methods/deap.rst §What is evaluated): `unpruned` (the trained network in deploy form), `pruned` (channels
# cut, PCP units kept) and `absorbed` (pruners merged into the 3x3 conv, BN folded: a plain, smaller ResNet).
# The paper's claim to check here: `absorbed` equals `pruned` (absorption is exact) and costs ~27 % of the
# teacher's MACs.

# %%
deap = study.run("deap", seed)
cfg = study.config("deap")
thr = cfg.prune.threshold
forms = P.forms_table(deap["forms"])
pc = cfg.prune
rule = (f"threshold {thr:g} on pruner norms" if pc.target_macs is None else
        f"{pc.schedule} pruning to {pc.target_macs:.0%} of the MACs, {pc.allocation} allocation")
R.save_table(forms, out, "03_1_deap_forms", caption=f"DEAP ({rule}): evaluated forms" + (
    "; with gradual pruning `unpruned` is the trained network before its zeroed channels are removed"
    if pc.target_macs is not None and pc.schedule == "gradual" else ""))
forms

# %% [markdown]
# **Figure 03_2**: each weighted loss term per epoch (log scale). The lasso terms measure how much pruner
# weight is left; the distillation terms (kl, dl, arkd) how far the student is from the teacher. In the paper
# all terms act from the first iteration with fixed weights (lambda = 0.003 for both lasso terms; here the
# preset's lambda, chosen on the validation split in notebook 02).

# %%
log = study.train_log(deap["run_dir"])
terms = [c for c in log.columns if c.startswith("loss_") and c != "loss_total"]
fig, ax = plt.subplots(figsize=(8, 3.6))
P.loss_curves(ax, {"deap": log}, log_scale=True)
ax.set(ylabel="weighted loss term (log)", title="DEAP loss terms")
ax.legend(fontsize=7, ncol=2)
R.save_figure(fig, out, "03_2_deap_losses", caption="DEAP: weighted loss terms per epoch")

# %% [markdown]
# **Figure 03_3**: the distribution of pruner norms (one per prunable channel) after every epoch, on a log
# scale (left; dashed: the paper's 1e-3 threshold), and the share of norms below the threshold (right). The
# paper's mechanism is visible here: the lasso separates the channels into a group near zero (cut) and a
# group that carries the signal, and the cut at the end should find the norms settled (the share below the
# threshold no longer moving). With gradual pruning (a variant; the cpu preset cuts once at the end) the
# dropped channels are exact zeros, left out of the histogram and counted in the right panel.

# %%
norms = study.pruner_norms(deap["run_dir"])
epochs_logged = sorted(norms)
lo = np.log10(max(min(float(v[v > 0].min()) if (v > 0).any() else thr for v in norms.values()), 1e-8))
hi = np.log10(max(float(v.max()) for v in norms.values())) + 1e-6
bins = np.linspace(min(lo, np.log10(thr)) - 0.5, hi + 0.1, 41)
hist = np.stack([np.histogram(np.log10(np.maximum(norms[e], 1e-12)), bins=bins)[0] for e in epochs_logged])
below = [float((norms[e] < thr).mean()) for e in epochs_logged]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"wspace": 0.45})
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
              "share below the threshold")

# %% [markdown]
# ## Ablations (full study)
#
# **Table 03_4** / **Figure 03_5**: DEAP with one loss term removed (ARKD's alpha or beta term, DL, KL) and
# with the exact proximal pruner update instead of the lasso subgradient, each absorbed and compared with
# full DEAP by the paired bootstrap. The paper credits each term with part of the gain; a term whose removal
# changes mAP within the interval is not shown to matter at this scale (single seed).

# %%
ABLATIONS = {"ARKD alpha=0": {"loss.arkd_alpha": 0.0}, "ARKD beta=0": {"loss.arkd_beta": 0.0},
             "no DL": {"loss.dl_weight": 0.0}, "no KL": {"loss.kl_weight": 0.0},
             "proximal update": {"prune.proximal": True}}
ablation = {}
if ablations is None:
    ablations = full
if ablations:
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
    P.bars_with_ci(ax, abl["variant"], abl["mAP"], abl["mAP_low"], abl["mAP_high"])
    ax.set(ylabel="mAP (%) [95% CI]", title="DEAP ablations")
    R.save_figure(fig, out, "03_5_deap_ablation_map", caption="DEAP ablations: mAP of the absorbed models")
    display(abl)
else:
    print("ablations=False: ablations skipped")

# %%
kept = sum(sum(w) for w in deap["kept_widths"]) / sum(sum(w) for w in deap["original_widths"])
R.record(out, "03_deap", {
    "threshold": thr, "mAP_unpruned": deap["forms"]["unpruned"]["mAP"], "mAP_pruned": deap["forms"]["pruned"]["mAP"],
    "mAP_absorbed": deap["forms"]["absorbed"]["mAP"], "kept_fraction": kept, "epochs_logged": len(epochs_logged),
    "frac_below_thr_final": below[-1], "loss_terms": [c[5:] for c in terms], "ablation": ablation,
})
