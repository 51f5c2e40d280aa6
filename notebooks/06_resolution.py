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
# # 06 - Resolution-aware KD: an HR teacher distils into an LR student
#
# The third source (IEEE TIP 2021; docs/methods/crkd.rst) saves MACs without touching the network: the student sees
# low-resolution (LR) images and learns from a high-resolution (HR) teacher through a discriminator and a
# cross-resolution KD loss (a resolution-aware distillation loss, a pair-wise constraint and an MMD loss).
# Only that frame is the source's (abstract only, no code); the formulas, the paired views, the weights and
# the discriminator's shape are this project's design (`deap_lib/methods/crkd.py`,
# `deap_lib/losses/cross_resolution.py`, `deap_lib/resolution.py`). The method is called `crkd` here, not
# "RKD", which in this library is the relational-KD loss. Every LR student has the teacher's architecture, so
# the MACs saved come from the input alone (about s^2 at scale s); DEAP at LR combines both ways of saving.

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
full = False          # the full study: every scale, and the CRKD ablation over seeds
scales = None         # None: 3/4, 1/2, 3/8 of the HR side when full, else 1/2
ablation_scale = 0.5  # the scale of the comparisons over seeds and of the ablation
seeds = None          # None: seed, seed+1, seed+2 when full, else seed

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from deap_lib import plots as P
from deap_lib import results as R
from deap_lib import resolution as RES
from deap_lib.complexity import profile
from deap_lib.export import load_compact
from deap_lib.inference import per_query_arrays
from deap_lib.rundir import RunDir
from deap_lib.study import Study, deployed_form

study = Study.from_notebook(globals())  # paths relative to the repository root
study

# %% [markdown]
# ## The runs
#
# At each scale s the LR input is round(HR x s) per side. Every LR run trains on paired views: each image is
# augmented once at HR (the teacher's input) and the student gets that view downsampled with antialiasing;
# test images are resized straight to LR. The methods, all with the preset's schedule and the study's
# pre-trained start:
#
# * `LR student`: the student alone at LR (CE + triplet);
# * `LR logit KD`: the same plus the KL on logits from the HR teacher (T = 2; no feature terms);
# * `crkd`: the resolution-aware KD (KL at T(s) = 2 / s, embedding L2, pair-wise, MMD, discriminator);
# * `DEAP at LR`: DEAP's student and losses on the LR view, cut by its own threshold at the end (the
#   compression it learns at LR, as at HR in notebook 02) and absorbed (both savings at once);
# * references: the HR teacher and HR student, and both tested at LR without adaptation (the drop that
#   motivates the method).

# %%
seeds = study.main_seeds(seeds, full)
if scales is None:
    scales = [0.75, 0.5, 0.375] if full else [0.5]
scales = sorted({float(s) for s in scales} | {float(ablation_scale)}, reverse=True)
hr = tuple(study.config("teacher").model.input_size)
LOGIT_KD = {"loss.dl_weight": 0.0, "loss.arkd_weight": 0.0}
ABLATIONS = {"no resolution-aware distillation": {"args.kl": 0.0, "args.embed": 0.0},
             "no pair-wise": {"args.pairwise": 0.0}, "no MMD": {"args.mmd": 0.0},
             "no discriminator": {"args.discriminator": False}}
METHODS = {"LR student": ("student", {}), "LR logit KD": ("kd", LOGIT_KD), "crkd": ("crkd", {}),
           "DEAP at LR": ("deap", {})}
TAGS = {"LR logit KD": "_logitkd", "no resolution-aware distillation": "_nodistill", "no pair-wise": "_nopairwise",
        "no MMD": "_nommd", "no discriminator": "_nodisc"}


def lr_tag(s):
    return "lr" + "x".join(map(str, RES.lr_size(hr, s)))


def spec(label, s, sd, extra=None):
    method, ov = METHODS[label] if label in METHODS else ("crkd", ABLATIONS[label])
    return (method, sd, {**RES.lr_overrides(hr, s), **ov, **(extra or {})}, lr_tag(s) + TAGS.get(label, ""))


grid = [(label, s, seed) for s in scales for label in METHODS]
over_seeds = [(label, ablation_scale, sd) for sd in seeds if sd != seed for label in ("LR student", "LR logit KD", "crkd")]
ablation = [(label, ablation_scale, sd) for sd in (seeds if full else []) for label in ABLATIONS]
keys = list(dict.fromkeys(grid + over_seeds + ablation))
# the HR plain student, unless it would train exactly as the teacher (then it is the teacher, notebook 01)
hr_models = ("teacher",) if study.student_is_teacher(seed) else ("teacher", "student")
refs = [(m, sd) for sd in seeds for m in hr_models]
ms = study.run_many([spec(*k) for k in keys] + refs)
run = dict(zip(keys, ms[:len(keys)]))
ref = dict(zip(refs, ms[len(keys):]))
ref.update({("student", sd): ref[("teacher", sd)] for sd in seeds if ("student", sd) not in ref})
print(f"{len(keys)} LR runs at scales {scales}, seeds {seeds}; HR {hr[0]}x{hr[1]}")

# %% [markdown]
# ## Accuracy against MACs
#
# **Table 06_1** (seed `seed`): every method at every scale, its LR input, MACs and parameters of the
# deployed model, and mAP (symmetric: LR queries against an LR gallery, the deployment case) with its 95 %
# interval; the HR teacher and HR student as trained, and tested at each LR without adaptation. The source's
# claim: the resolution-aware student beats conventional KD at the same LR, the more so the larger the gap.

# %%
cfg_hr = study.config("student")
rows, at_lr = [], {}
for s in scales:
    size = RES.lr_size(hr, s)
    for who in ("teacher", "student"):
        m = ref[(who, seed)]
        net = load_compact(str(RunDir(m["run_dir"]).model_path)).eval()
        summ, res = RES.evaluate_at(net, cfg_hr, size, seed=seed)
        at_lr[(who, s)] = (summ, per_query_arrays(res))
        cx = profile(net, (3, *size))
        rows.append({"method": f"HR {who}, tested at LR", "scale": s, "input": f"{size[0]}x{size[1]}",
                     "macs_m": cx["macs"] / 1e6, "params_m": cx["params_no_classifier"] / 1e6, "mAP": summ["mAP"],
                     "mAP_low": summ["mAP_low"], "mAP_high": summ["mAP_high"], "rank1": summ["rank1"]})
    for label in METHODS:
        m = run[(label, s, seed)]
        f = m["forms"][deployed_form(m["forms"])]
        rows.append({"method": label, "scale": s, "input": f"{size[0]}x{size[1]}", "macs_m": f["macs"] / 1e6,
                     "params_m": f["params_no_classifier"] / 1e6, "mAP": f["mAP"], "mAP_low": f["mAP_low"],
                     "mAP_high": f["mAP_high"], "rank1": f["rank1"]})
for who in ("teacher", "student"):
    f = ref[(who, seed)]["forms"][deployed_form(ref[(who, seed)]["forms"])]
    rows.append({"method": f"HR {who}", "scale": 1.0, "input": f"{hr[0]}x{hr[1]}", "macs_m": f["macs"] / 1e6,
                 "params_m": f["params_no_classifier"] / 1e6, "mAP": f["mAP"], "mAP_low": f["mAP_low"],
                 "mAP_high": f["mAP_high"], "rank1": f["rank1"]})
points = pd.DataFrame(rows)
points["mAP % [95% CI]"] = [f"{a:.1f} [{lo:.1f}, {hi:.1f}]" for a, lo, hi in
                            zip(points["mAP"], points["mAP_low"], points["mAP_high"])]
R.save_table(points, out, "06_1_resolution_points", caption=f"Every method at every scale of the {hr[0]}x{hr[1]} "
             f"input (seed {seed}): LR input, deployed MACs and parameters, symmetric mAP (LR query vs LR gallery)")
points

# %% [markdown]
# **Figure 06_2**: mAP against MACs, every method a curve over the scales (error bars: 95 % intervals); grey:
# the HR study's deployed models of the same seed (notebooks 01-05, from `summary.csv`), so the LR points
# join the study's Pareto plot; dashed: the Pareto front over all of them.

# %%
fig, ax = plt.subplots(figsize=(7.5, 4.5))
summary = pd.read_csv(study.summary_csv) if study.summary_csv.is_file() else pd.DataFrame()
if len(summary):
    hr_runs = summary[(summary["seed"] == seed) & (summary["preset"] == study.preset)
                      & ~summary["run"].str.contains("-lr")]
    dep = []
    for name, g in hr_runs.groupby("run"):
        forms = set(g["form"])
        best = deployed_form({f: None for f in forms})
        dep.append(g[g["form"] == best].iloc[0])
    dep = pd.DataFrame(dep)
    if len(dep):
        ax.scatter(dep["macs_g"] * 1e3, dep["mAP"], c="0.7", s=14, label="HR study runs", zorder=1)
else:
    dep = pd.DataFrame()
for label, g in points.groupby("method", sort=False):
    g = g.sort_values("macs_m")
    ax.errorbar(g["macs_m"], g["mAP"], yerr=[g["mAP"] - g["mAP_low"], g["mAP_high"] - g["mAP"]],
                marker="o" if len(g) > 1 else "s", ms=4, capsize=2, label=label)
allx = list(points["macs_m"]) + (list(dep["macs_g"] * 1e3) if len(dep) else [])
ally = list(points["mAP"]) + (list(dep["mAP"]) if len(dep) else [])
front = P.pareto_front(pd.Series(allx), pd.Series(ally))
ax.step(*zip(*front), where="post", c="k", lw=0.8, ls="--", label="Pareto front")
ax.set(xscale="log", xlabel="MACs (M, one image, log scale)", ylabel="mAP (%) [95% CI]",
       title="resolution vs pruning: accuracy against cost")
ax.legend(fontsize=7, ncol=2)
R.save_figure(fig, out, "06_2_resolution_pareto", caption=f"mAP vs MACs of every method over the scales {scales} "
              f"(seed {seed}), with the HR study's deployed runs (grey) and the Pareto front")

# %% [markdown]
# ## crkd against the LR baselines
#
# **Table 06_3**: at scale `ablation_scale`, crkd minus the LR student alone and minus LR logit KD, per seed
# (paired bootstrap over query identities). **Table 06_4** (several seeds): the same differences seed by
# seed, with their mean, sample std and Student-t 95 % interval over seeds. A difference is called only when
# its interval excludes zero.

# %%
def per_query(m):
    return R.load_per_query(m["run_dir"], deployed_form(m["forms"]))


a = ablation_scale
rows = []
for sd in seeds:
    vs = P.paired_vs(per_query(run[("crkd", a, sd)]), {lbl: per_query(run[(lbl, a, sd)])
                                                       for lbl in ("LR student", "LR logit KD")}, who="crkd")
    for _, r in vs.iterrows():
        rows.append({"seed": sd, "vs": r["crkd vs"], "crkd_mAP": run[("crkd", a, sd)]["forms"]["student"]["mAP"],
                     **{k: r[k] for k in ("d_mAP", "d_low", "d_high", "verdict")}})
paired = pd.DataFrame(rows)


def seed_rows(labels):
    """One row per (label, seed) of deployed runs at the ablation scale, as seed_differences reads them."""
    out_rows = []
    for lbl in labels:
        for sd in seeds:
            if (lbl, a, sd) in run:
                m = run[(lbl, a, sd)]
                out_rows.append({"run": Path(m["run_dir"]).name, "method": lbl, "seed": sd, "deployed": True,
                                 "mAP": m["forms"][deployed_form(m["forms"])]["mAP"]})
    return pd.DataFrame(out_rows)


vs_seeds = pd.DataFrame()
if len(seeds) > 1:
    vs_seeds = R.seed_differences(seed_rows(["crkd", "LR student", "LR logit KD"]), "crkd",
                                  methods=["LR student", "LR logit KD"])
    vs_seeds["verdict"] = [P.verdict(lo, hi, "crkd") for lo, hi in zip(vs_seeds["d_ci_low"], vs_seeds["d_ci_high"])]
R.save_table(paired, out, "06_3_crkd_vs_lr_baselines", caption=f"crkd minus the LR student alone and LR logit KD "
             f"at scale {a} (paired bootstrap over query identities), per seed")
if len(vs_seeds):
    R.save_table(vs_seeds, out, "06_4_crkd_vs_lr_baselines_seeds", caption=f"crkd minus the LR baselines at scale "
                 f"{a} over seeds {', '.join(map(str, seeds))}: mean, sample std, 95 % t interval, seeds crkd wins")
display(paired, vs_seeds)

# %% [markdown]
# ## Which CRKD terms help (full study)
#
# **Table 06_5**: crkd minus crkd with one part switched off (the resolution-aware distillation, i.e. the
# KL at T(s) and the embedding L2; the pair-wise term; the MMD; the discriminator), seed by seed at scale
# `ablation_scale`. A positive difference means the part helps. (The temperature rule alone is a config
# change, `args.temperature=fixed`, not run here.)

# %%
abl = pd.DataFrame()
if ablation:
    abl = R.seed_differences(seed_rows(["crkd", *ABLATIONS]), "crkd", methods=list(ABLATIONS))
    abl["verdict"] = [("helps" if lo > 0 else "hurts" if hi < 0 else "no clear effect")
                      for lo, hi in zip(abl["d_ci_low"], abl["d_ci_high"])]
    abl["variant_mAP_mean"] = [np.mean([run[(v, a, sd)]["forms"]["student"]["mAP"] for sd in seeds])
                               for v in abl["vs"]]
    R.save_table(abl, out, "06_5_crkd_ablation", caption=f"crkd minus crkd without each part at scale {a}, "
                 f"seeds {', '.join(map(str, seeds))} (positive: the part helps)")
    display(abl)
else:
    print("full=False: the CRKD ablation runs in the full study")

# %% [markdown]
# ## Cross-resolution retrieval
#
# **Table 06_6** (seed `seed`, scale `ablation_scale`): LR queries embedded by each student against the
# gallery embedded at HR by the teacher (the case where a gallery was indexed once by the big model and
# cheap clients query it), beside the symmetric mAP. Only students distilled into the teacher's embedding
# space can do this; the LR student alone and the HR student share no space with the teacher.

# %%
teacher_net = load_compact(str(RunDir(ref[("teacher", seed)]["run_dir"]).model_path)).eval()
method, sd, ov, _ = spec("crkd", a, seed)
cfg_lr = study.config(method, sd, ov)
cross_rows = []
students = {lbl: RES.deployed_model(run[(lbl, a, seed)]) for lbl in METHODS}
students["HR student, tested at LR"] = load_compact(str(RunDir(ref[("student", seed)]["run_dir"]).model_path)).eval()
for lbl, net in students.items():
    summ, _ = RES.evaluate_cross_resolution(net, teacher_net, cfg_lr, seed=seed)
    sym = (run[(lbl, a, seed)]["forms"][deployed_form(run[(lbl, a, seed)]["forms"])] if lbl in METHODS
           else at_lr[("student", a)][0])
    cross_rows.append({"student": lbl, "cross_mAP": summ["mAP"], "cross_low": summ["mAP_low"],
                       "cross_high": summ["mAP_high"], "cross_rank1": summ["rank1"], "symmetric_mAP": sym["mAP"]})
teacher_hr = ref[("teacher", seed)]["forms"]["teacher"]
cross = pd.DataFrame(cross_rows)
cross["cross mAP % [95% CI]"] = [f"{m:.1f} [{lo:.1f}, {hi:.1f}]" for m, lo, hi in
                                 zip(cross["cross_mAP"], cross["cross_low"], cross["cross_high"])]
R.save_table(cross, out, "06_6_cross_resolution", caption=f"Cross-resolution retrieval at scale {a} (seed {seed}): "
             f"LR student queries vs the HR teacher's gallery features, and the symmetric LR mAP; the HR teacher "
             f"on its own: {teacher_hr['mAP']:.1f} %")
cross

# %%
crkd_half = run[("crkd", a, seed)]["forms"]["student"]
R.record(out, "06_resolution", {
    "hr_size": list(hr), "scales": scales, "ablation_scale": a, "seeds": seeds,
    "points": points.drop(columns="mAP % [95% CI]").to_dict("records"),
    "crkd_vs_lr_baselines": paired.to_dict("records"),
    "crkd_vs_lr_baselines_over_seeds": vs_seeds.to_dict("records"),
    "ablation": abl.to_dict("records"), "cross_resolution": cross.drop(columns="cross mAP % [95% CI]").to_dict("records"),
    "crkd_mAP": crkd_half["mAP"], "crkd_macs": crkd_half["macs"],
    "teacher_mAP": teacher_hr["mAP"], "teacher_macs": teacher_hr["macs"],
    "temperature": {str(s): 2.0 / s for s in scales},
})
