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
# DEAP with the preset's own pruning rule: loss terms, the evolution of the pruner norms, the three evaluated forms; with `full`, the paper's claims about its own parts, over seeds at DEAP's learned budget: what each loss term buys, and whether the PCP pruners beat sparsity on the weights themselves.

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
ablations = None      # the loss-term ablations and the sparsity arms (None: in the full study)
seeds = None          # None: seed, seed+1, seed+2 in the full study, else seed

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from deap_lib import plots as P
from deap_lib import results as R
from deap_lib.study import Study, macs_kept

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
# ## DEAP's parts, at its learned budget (full study)
#
# The paper credits each loss term with part of its accuracy and the PCP unit with resolving the dilemma
# of KD and pruning (sparsity on untrained pruners instead of on the weights that distillation is shaping).
# Every arm below trains DEAP's schedule from the same start as DEAP (each seed its own pre-training and
# teacher) and is then cut to the budget DEAP learned with its own threshold for that seed (its share of the
# MACs; BN statistics re-calibrated after the cut, as for every cut to a budget), so the arms differ only in
# what they train. A cut to a budget comes from the arm's own finished run (the cut keys act after training,
# `deap_lib.methods.recut`), whose own threshold cut is reported beside it.
#
# **Table 03_4** / **Figure 03_5**: DEAP without one of its terms (KL; DL; ARKD's representation term,
# alpha = 0; its relation term, beta = 0; the lasso, lambda = 0, which leaves the pruners near identity, so
# the cut to the budget ranks untrained channels) minus full DEAP, per seed (paired bootstrap over query
# identities, 95 %) and over seeds (mean with its 90 % t interval; "equivalent" when the two one-sided tests
# place it within +-1 point). **Table 03_6** / **Figure 03_7**: the same distillation with the lasso on the
# network's own channels instead of on the pruners: on the BN gates of every block (`kd_np_direct`) and on the
# 3x3 filters themselves (`kd_np_filters`: the input slices and output filters of the conv the pruners
# surround), at DEAP's lambda and schedule, minus DEAP. All numbers: test split.

# %%
RECALIB = {"prune.bn_recalib_batches": 20}  # a cut to a budget removes channels whose gates are not zero
TERMS = {"no KL": ("deap", {"loss.kl_weight": 0.0}), "no DL": ("deap", {"loss.dl_weight": 0.0}),
         "no ARKD representation (alpha = 0)": ("deap", {"loss.arkd_alpha": 0.0}),
         "no ARKD relation (beta = 0)": ("deap", {"loss.arkd_beta": 0.0}),
         "no lasso (lambda = 0)": ("deap", {"loss.lasso1": 0.0, "loss.lasso2": 0.0})}
SPARSITY = {"lasso on the BN gates (kd_np_direct)": ("kd_np_direct", {}),
            "lasso on the 3x3 filters (kd_np_filters)": ("kd_np_filters", {})}
REF = "DEAP (all terms, lasso on the pruners)"
ablation, sparsity = {}, {}
if ablations is None:
    ablations = full
if ablations:
    seeds = study.main_seeds(seeds, full)
    budgets = {s: study.learned_budget(s) for s in seeds}  # each seed's DEAP run (notebook 02's)
    arms = {REF: ("deap", {}), **TERMS, **SPARSITY}
    keys = [(a, s) for a in arms for s in seeds]
    cut_specs = [(arms[a][0], s, {**arms[a][1], "prune.target_macs": budgets[s], **RECALIB}) for a, s in keys]
    own_specs = [(arms[a][0], s, arms[a][1]) for a, s in keys]  # each arm's own threshold cut
    ms = study.run_many(cut_specs + own_specs)
    at_budget, own = dict(zip(keys, ms[:len(keys)])), dict(zip(keys, ms[len(keys):]))

    def arm_table(names):
        rows = R.arms_over_seeds({k: at_budget[k] for k in keys if k[0] in (REF, *names)}, REF)
        for r in rows:  # the arm's own learned compression and accuracy (threshold cut), mean over seeds
            r["own_macs_kept"] = float(np.mean([macs_kept(own[(r["arm"], s)]["forms"]) for s in r["seeds"]]))
            r["own_mAP"] = float(np.mean([own[(r["arm"], s)]["forms"]["absorbed"]["mAP"] for s in r["seeds"]]))
            r["per_seed_text"] = "; ".join(f"s{p['seed']} {p['d_mAP']:+.2f} [{p['d_low']:+.2f}, {p['d_high']:+.2f}]"
                                           for p in r["per_seed"])
        return pd.DataFrame(rows)

    def arm_figure(df, name, title):
        fig, ax = plt.subplots(figsize=(8, 1.4 + 0.55 * len(df)))
        y = np.arange(len(df))
        ax.errorbar(df["d_mean"], y, xerr=[df["d_mean"] - df["ci_low"], df["ci_high"] - df["d_mean"]], fmt="o",
                    color="k", capsize=3, label="mean over seeds [90 % t interval]")
        pts = [(p["d_mAP"], k) for k, r in enumerate(df.to_dict("records")) for p in r["per_seed"]]
        ax.scatter([x for x, _ in pts], [k for _, k in pts], s=14, color="tab:blue", alpha=0.6, label="one seed")
        ax.axvline(0, color="tab:red", lw=1, label="full DEAP")
        ax.axvspan(-1, 1, color="tab:gray", alpha=0.15, label="within +-1 point")
        ax.set_yticks(y, df["arm"])
        ax.invert_yaxis()  # the table's order, top to bottom
        ax.set(xlabel=f"mAP minus {REF} (points), test split", title=title)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, frameon=False)
        R.save_figure(fig, out, name, caption=f"{title}: mAP difference to full DEAP at its learned budget, per seed "
                      "and mean over seeds with its 90 % t interval")

    cols = ["arm", "seeds", "mAP", "reference_mAP", "d_mean", "ci_low", "ci_high", "verdict", "per_seed_text",
            "own_macs_kept", "own_mAP"]
    terms_df = arm_table(TERMS)
    R.save_table(terms_df[cols], out, "03_4_deap_ablation", caption="DEAP without one loss term minus full DEAP, "
                 f"both cut to DEAP's learned budget of each seed ({', '.join(f'{b:.1%}' for b in budgets.values())} "
                 "of the MACs) with BN re-calibration; per seed (paired bootstrap, 95 %) and over seeds (90 % t "
                 "interval, TOST within +-1); own_*: the arm's own threshold cut, mean over seeds")
    arm_figure(terms_df, "03_5_deap_ablation_map", "DEAP's loss terms")
    sparsity_df = arm_table(SPARSITY)
    R.save_table(sparsity_df[cols], out, "03_6_pcp_vs_weight_sparsity", caption="The same distillation with the "
                 "lasso on the network's own channels (BN gates; 3x3 filters) instead of on the PCP pruners, minus "
                 "DEAP, at DEAP's learned budget of each seed; per seed and over seeds as in 03_4")
    arm_figure(sparsity_df, "03_7_pcp_vs_weight_sparsity", "PCP pruners vs sparsity on the weights")
    ablation = R.table_records(terms_df[cols])
    sparsity = R.table_records(sparsity_df[cols])
    display(terms_df[cols], sparsity_df[cols])
else:
    print("ablations=False: the parts of DEAP are tested in the full study")

# %%
kept = sum(sum(w) for w in deap["kept_widths"]) / sum(sum(w) for w in deap["original_widths"])
R.record(out, "03_deap", {
    "threshold": thr, "mAP_unpruned": deap["forms"]["unpruned"]["mAP"], "mAP_pruned": deap["forms"]["pruned"]["mAP"],
    "mAP_absorbed": deap["forms"]["absorbed"]["mAP"], "kept_fraction": kept, "epochs_logged": len(epochs_logged),
    "frac_below_thr_final": below[-1], "loss_terms": [c[5:] for c in terms], "ablation": ablation,
    "sparsity": sparsity, "seeds": list(seeds) if ablations else [seed],
})
