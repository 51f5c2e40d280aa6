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
# # 04 - Absorption, complexity and speed
#
# Absorb the trained DEAP student and check it computes the same function as the pruned one; compare every method's accuracy against its cost; time the forms.

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
latency_batch_sizes = (1, 16)
latency_rounds = 5
paper_latency = None  # also the paper-scale deploy benchmark (ResNet-101, 256x256); None: in the full study

# %%
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from deap_lib import plots as P
from deap_lib import results as R
from deap_lib.rundir import RunDir
from deap_lib.study import Study

study = Study.from_notebook(globals())  # paths relative to the repository root
study

# %% [markdown]
# ## Absorption is exact
#
# The trained DEAP student (training form, before the cut) is cut and absorbed again here, and the pruned and
# absorbed models are compared on real query images. The report lists every block's original and kept
# widths; the run's own check compares the pruned, BN-re-calibrated model with its absorbed form in float64.
# The paper's claim: re-parameterisation changes nothing but float rounding (relative differences ~1e-6).

# %%
from deap_lib.absorb import absorb, prune, to_deploy, verify
from deap_lib.complexity import measure_latency
from deap_lib.export import load_compact
from deap_lib.data import RunData

teacher_dir = study.teacher(seed)
deap = study.run("deap", seed)
cfg = study.config("deap")
pc = cfg.prune
input_size = (3, *cfg.model.input_size)
student = load_compact(str(RunDir(deap["run_dir"]).model_path))  # trained PCP student, before the cut
absorbed_nb, report = absorb(student, pc.threshold, pc.min_channels, relative=pc.relative, input_size=input_size)
pruned_nb = prune(student, pc.threshold, pc.min_channels, relative=pc.relative).eval()
images = next(iter(RunData(cfg).query))[0][:16]
check = verify(pruned_nb, absorbed_nb, images)
print(report.table())
print(f"equivalence on {len(images)} query images: max |pruned - absorbed| = {check['max_abs']:.2e} "
      f"(relative {check['max_rel']:.2e})")
print("the run's own check (pruned + BN re-calibrated vs absorbed):", deap["absorb_verification"])

# %% [markdown]
# **Table 04_3**: DEAP's three forms side by side; `pruned` and `absorbed` should agree (same channels,
# same function), and `absorbed` has the fewest parameters (no pruners, BN folded).

# %%
three = P.forms_table(deap["forms"], ("unpruned", "pruned", "absorbed"))
R.save_table(three, out, "04_3_three_forms", caption="DEAP student: unpruned / pruned (PCP units kept) / absorbed"
             + (" (gradual pruning: `unpruned` already has the zeroed channels, not yet removed)"
                if study.config("deap").prune.schedule == "gradual" else ""))
three

# %% [markdown]
# ## The main table
#
# **Table 04_1**: the teacher and every method's deployed model of this seed: mAP with its interval,
# Rank-1, mINP, parameters (without the training-only classifier) and MACs (thop's multiply-accumulates at
# the preset's input size), the share removed, and the paired mAP difference to the teacher. The paper's
# headline (VeRi-776, ResNet-101): DEAP removes 73.24 % of the parameters and 71.98 % of the FLOPs at the
# teacher's accuracy.

# %%
runs = study.load_runs(used=True)  # the runs this study's notebooks used (summary.csv), not all on disk
runs = runs[runs["seed"] == seed]  # other seeds' runs: the seed statistics of notebook 02
table = R.main_table(runs)
R.save_table(table, out, "04_1_main_table", markdown_df=R.format_main_table(table),
             caption=f"Teacher vs every method's deployed model (seed {seed}): accuracy, size, MACs and the "
                     "paired-bootstrap mAP difference to the teacher")
R.format_main_table(table)

# %% [markdown]
# **Figure 04_2**: accuracy against cost of every run's deployed model (error bars: 95 % intervals; dashed:
# the Pareto front, the runs no cheaper run beats). The paper's claim in this picture: DEAP sits on the
# front at about a quarter of the teacher's MACs, level with the teacher.

# %%
dep = runs[runs["deployed"]].copy()
dep["macs_m"] = dep["macs"] / 1e6
fig, ax = plt.subplots(figsize=(7, 4.2))
for method, g in dep.groupby("method"):
    ax.errorbar(g["macs_m"], g["mAP"], yerr=[g["mAP"] - g["mAP_low"], g["mAP_high"] - g["mAP"]], fmt="o",
                capsize=2, label=method)
front = P.pareto_front(dep["macs_m"], dep["mAP"])
ax.step(*zip(*front), where="post", c="k", lw=0.8, ls="--", label="Pareto front")
ax.set(xlabel="MACs (M, one image)", ylabel="mAP (%) [95% CI]", title="accuracy vs cost of every run")
ax.legend(fontsize=7, ncol=2)
R.save_figure(fig, out, "04_2_pareto", caption=f"mAP vs MACs of every run's deployed model, seed {seed} (dashed: "
              "Pareto front)")

# %% [markdown]
# **Figure 04_4**: the share of channels each pruning run keeps in every block (C1: conv1 outputs / pruner-1
# columns; C3: conv3 inputs / pruner-2 rows). The paper's threshold rule (the cpu preset's) lets the lasso
# decide per block, and the paper reports that deep blocks are cut most; a uniform allocation (a variant)
# would give one colour per run.

# %%
pruning = [m for m in (study.metrics(d) for d in runs.loc[runs["form"] == "absorbed", "run_dir"].unique())
           if m.get("kept_widths")]
labels, rows = P.kept_share_rows(pruning)
fig, ax = plt.subplots(figsize=(9, 0.35 * len(rows) + 1.5))
im = ax.imshow(np.array(rows), aspect="auto", cmap="magma", vmin=0, vmax=1)
ax.set_yticks(range(len(labels)), labels, fontsize=7)
ax.set(xlabel="bottleneck block (network order)\n" + P.WIDTHS_NOTE, title="share of channels kept per block")
fig.colorbar(im, ax=ax, label="kept / original")
R.save_figure(fig, out, "04_4_kept_channels", caption="Kept channels per block of every pruning run")

# %% [markdown]
# ## Speed
#
# **Table 04_5**: CPU latency in eager PyTorch (median of interleaved round-robin rounds, so load drifts hit
# every model alike) of the teacher (as trained, and with BN folded: the fair reference, since the absorbed
# student is folded too) and DEAP's forms at batch 1 and 16, the speed-up over the folded teacher and the
# MACs ratio. A speed-up below the MACs ratio is the cost of narrow, odd channel counts on CPU kernels and of
# per-layer overheads at this toy scale; the paper reports FLOPs only.

# %%
teacher_model = load_compact(str(RunDir(teacher_dir).model_path))
models = {"teacher_folded": to_deploy(teacher_model), "teacher": teacher_model, "unpruned": to_deploy(student),
          "pruned": pruned_nb, "absorbed": load_compact(str(RunDir(deap["run_dir"]).absorbed_path))}
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
        lat_rows.append({"model": k, "batch": bs, "median_ms": med[k],
                         "speedup_vs_teacher": med["teacher_folded"] / med[k],
                         "macs_m": macs[k] / 1e6, "macs_ratio": macs["teacher"] / macs[k]})
lat = pd.DataFrame(lat_rows)
R.save_table(lat, out, "04_5_latency", caption=f"CPU latency ({study.threads} thread(s), eager PyTorch, median of "
             f"{latency_rounds} round-robin rounds) of the teacher and the DEAP student's forms; speed-up over "
             "the BN-folded teacher")
lat

# %% [markdown]
# **Table 04_6** (full study): the deploy runtimes side by side at this study's scale and at the paper's
# (ResNet-101, 256x256, last stride 1, every stage keeping the mean share of channels this DEAP run keeps
# there; random weights, BN folded): `benchmarks/bench_deploy.py`, batch 1, the fastest runtime of the
# absorbed student with its speed-up over the folded teacher in that runtime and that speed-up's share of
# the MACs ratio. It tells what the paper's compression buys on a CPU.

# %%
if paper_latency is None:
    paper_latency = full
deploy_rec = []
if paper_latency:
    sys.path.insert(0, str(Path("benchmarks").resolve()))
    import bench_deploy

    bench = bench_deploy.run(scales=("study", "paper"), threads=study.threads, rounds=3, repeats=2,
                             run_metrics=str(RunDir(deap["run_dir"]).metrics_path), batches=(1,))
    dep_rows = pd.DataFrame(bench["rows"])
    best = pd.DataFrame(bench_deploy.best_paths(bench))
    R.save_table(best, out, "04_6_deploy_runtimes", caption=f"Fastest deploy runtime of the absorbed student at "
                 f"the study's and the paper's scale (batch 1, {bench['device']}): speed-up over the folded teacher "
                 "in the same runtime, its share of the MACs ratio, best vs best, and vs the eager teacher")
    deploy_rec = best.to_dict("records")
    display(dep_rows, best)
else:
    print("paper_latency=False: the deploy-runtime comparison runs in the full study (or `make bench`)")

# %%
d = table[table["run"] == Path(deap["run_dir"]).name].iloc[0]
R.record(out, "04_absorb_and_plots", {
    "absorb_max_abs": check["max_abs"], "absorb_max_rel": check["max_rel"],
    "run_absorb_max_rel": deap["absorb_verification"]["max_rel"], "kept_fraction": report.kept_fraction(),
    "teacher_mAP": float(table.loc[table["method"] == "teacher", "mAP"].iloc[0]), "deap_mAP": float(d["mAP"]),
    "deap_params_reduction_pct": float(d["params_reduction_pct"]), "deap_macs_reduction_pct": float(d["macs_reduction_pct"]),
    "deap_d_mAP": float(d["d_mAP"]), "deap_d_mAP_low": float(d["d_mAP_low"]), "deap_d_mAP_high": float(d["d_mAP_high"]),
    "methods": sorted(table["method"].unique()), "n_runs": int(len(table)),
    "latency_speedup": {f"{r.model}@{r.batch}": float(r.speedup_vs_teacher) for r in lat.itertuples()},
    "deap_kept_widths": deap["kept_widths"], "deap_original_widths": deap["original_widths"],
    "deploy_runtimes": deploy_rec,
})
