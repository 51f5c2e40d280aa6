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
# # 09 - ARKD against the field's KD losses, under PCP
#
# The paper's claim: its asymmetric relation KD (ARKD) transfers feature and relation knowledge "without
# additional adaptation modules" and helps DEAP. Here every loss the field uses for representation or
# relation distillation takes ARKD's place in DEAP's objective (`loss.relation`, `deap_lib.losses.kd_slot`),
# everything else equal (KL, DL, the lasso, the start, the schedule): attention transfer (AT), similarity
# preserving (SP) and FitNet hints (with a trained regressor per map) on ARKD's stage-3/4 maps, relational
# KD (RKD, distance + angle) and probabilistic knowledge transfer (PKT) on the retrieval embedding, and
# logit KL alone (no DL, no relation term). Each at the weight of the common CIFAR-100 KD benchmark. Two
# settings: at DEAP's learned budget of each seed (cut from each arm's own run, BN re-calibrated; over seeds)
# and uncompressed (lambda = 0: the pruners stay near identity and are absorbed back; what the loss gives
# a KD student). Test-split mAP; every difference is to ARKD in the same setting and seed.

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
seeds = None          # seeds at DEAP's budget; None: seed, seed+1, seed+2 when full, else seed
relations = None      # the losses in ARKD's place; None: all of them when full, else ARKD and RKD
uncompressed_seeds = None  # seeds of the uncompressed setting; None: those of the budget when full, else seed

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from deap_lib import results as R
from deap_lib.losses.kd_slot import SLOT_LOSSES, RelationSlot, stage_map_channels
from deap_lib.models import build_model
from deap_lib.study import Study, macs_kept

study = Study.from_notebook(globals())  # paths relative to the repository root
study

# %% [markdown]
# ## The losses
#
# **Table 09_1**: each arm, what its term reads, its weight and the trainable parameters it adds beside the
# student (adaptation modules, dropped at deployment): ARKD's claim is to need none.

# %%
ARMS = {"ARKD (DEAP)": {}, "AT": {"loss.relation": "at"}, "SP": {"loss.relation": "sp"},
        "FitNet": {"loss.relation": "fitnet"}, "RKD": {"loss.relation": "rkd"}, "PKT": {"loss.relation": "pkt"},
        "logit KL alone": {"loss.relation": "none", "loss.dl_weight": 0.0}}
REF = "ARKD (DEAP)"
if relations is None:
    relations = list(ARMS) if full else [REF, "RKD"]
unknown = [r for r in relations if r not in ARMS]
if unknown:
    raise KeyError(f"relations: unknown {unknown}; valid: {', '.join(ARMS)}")
relations = [REF] + [r for r in relations if r != REF]
cfg = study.config("deap")
net = build_model(cfg.model.arch, 10, width=cfg.model.width, last_stride=cfg.model.last_stride,
                  embed_dim=cfg.model.embed_dim, pcp="deap")
channels = stage_map_channels(net, net, (3, *cfg.model.input_size))
losses = []
for arm in relations:
    name = ARMS[arm].get("loss.relation", "arkd")
    slot = RelationSlot(name, cfg.loss.arkd_weight if name == "arkd" else None, map_channels=channels)
    losses.append({"arm": arm, "term": name, "reads": SLOT_LOSSES[name].inputs or "-", "weight": slot.weight,
                   "DL": ARMS[arm].get("loss.dl_weight", cfg.loss.dl_weight),
                   "adaptation_params": slot.adaptation_parameters()})
losses = pd.DataFrame(losses)
R.save_table(losses, out, "09_1_losses", caption="The losses in ARKD's place: what each reads, its weight, the "
             "trainable parameters it adds beside the student (stage maps of channels "
             f"{[c for c, _ in channels]})")
losses

# %% [markdown]
# ## At DEAP's learned budget and uncompressed
#
# **Table 09_2**: each arm minus ARKD, at DEAP's learned budget of each seed (per seed: paired bootstrap over
# query identities, 95 %; over seeds: mean with its 90 % t interval and the TOST verdict within +-1 point)
# and uncompressed (lambda = 0), beside the trainable parameters the arm adds (table 09_1) and the share of
# the MACs each arm's own threshold cut keeps. **Figure 09_3**: the same differences, each arm labelled with
# the parameters it adds.

# %%
seeds = study.main_seeds(seeds, full)
useeds = sorted({int(s) for s in (seeds if uncompressed_seeds is None and full else uncompressed_seeds or [])} | {seed})
budgets = {s: study.learned_budget(s) for s in seeds}
RECALIB = {"prune.bn_recalib_batches": 20}
NO_LASSO = {"loss.lasso1": 0.0, "loss.lasso2": 0.0}
kb = [(a, s) for a in relations for s in seeds]
ku = [(a, s) for a in relations for s in useeds]
ms = study.run_many([("deap", s, {**ARMS[a], "prune.target_macs": budgets[s], **RECALIB}) for a, s in kb]
                    + [("deap", s, {**ARMS[a], **NO_LASSO}) for a, s in ku]
                    + [("deap", s, ARMS[a]) for a, s in kb], allow_failed=True)  # a loss may diverge: a result
at_budget = dict(zip(kb, ms[:len(kb)]))
uncompressed = dict(zip(ku, ms[len(kb):len(kb) + len(ku)]))
own = dict(zip(kb, ms[len(kb) + len(ku):]))
failed = sorted({a for (a, _), m in [*at_budget.items(), *uncompressed.items(), *own.items()] if m is None})
if REF in failed:
    raise RuntimeError("ARKD (DEAP's own run) failed: nothing to compare with")
if failed:
    print(f"failed to train (non-finite loss or another error, log tails above), listed without numbers: {failed}")
ok = [a for a in relations if a not in failed]
rows = []
for b, u in zip(R.arms_over_seeds({k: v for k, v in at_budget.items() if k[0] in ok}, REF),
                R.arms_over_seeds({k: v for k, v in uncompressed.items() if k[0] in ok}, REF)):
    rows.append({"arm": b["arm"], "seeds": b["seeds"], "mAP_budget": b["mAP"], "d_budget": b["d_mean"],
                 "d_budget_low": b["ci_low"], "d_budget_high": b["ci_high"], "verdict_budget": b["verdict"],
                 "per_seed_budget": b["per_seed"], "uncompressed_seeds": u["seeds"], "mAP_uncompressed": u["mAP"],
                 "d_uncompressed": u["d_mean"], "d_uncompressed_low": u["ci_low"], "d_uncompressed_high": u["ci_high"],
                 "per_seed_uncompressed": u["per_seed"],
                 "verdict_uncompressed": u["verdict"],
                 "own_macs_kept": float(np.mean([macs_kept(own[(b["arm"], s)]["forms"]) for s in b["seeds"]]))})
vs = pd.DataFrame(rows)
ref_row = {"arm": REF, "mAP_budget": float(np.mean([at_budget[(REF, s)]["forms"]["absorbed"]["mAP"] for s in seeds])),
           "mAP_uncompressed": float(np.mean([uncompressed[(REF, s)]["forms"]["absorbed"]["mAP"] for s in useeds])),
           "own_macs_kept": float(np.mean([macs_kept(own[(REF, s)]["forms"]) for s in seeds]))}
cols = ["arm", "adaptation_params", "mAP_budget", "d_budget", "d_budget_low", "d_budget_high", "verdict_budget",
        "mAP_uncompressed", "d_uncompressed", "d_uncompressed_low", "d_uncompressed_high", "verdict_uncompressed",
        "own_macs_kept"]
diverged = [{"arm": a, "verdict_budget": "failed to train", "verdict_uncompressed": "failed to train"}
            for a in failed]  # reported, not dropped
table = pd.concat([pd.DataFrame([ref_row]), vs, pd.DataFrame(diverged)], ignore_index=True)
table = table.merge(losses[["arm", "adaptation_params"]], on="arm", how="left")[cols]
R.save_table(table, out, "09_2_losses_vs_arkd", caption=f"Each loss in ARKD's place minus ARKD, beside the trainable "
             "parameters it adds (adaptation_params): at DEAP's learned "
             f"budget (seeds {seeds}; budgets {', '.join(f'{b:.1%}' for b in budgets.values())} of the MACs; mean "
             f"over seeds with its 90 % t interval and TOST verdict) and uncompressed (lambda = 0, seeds {useeds}); "
             "own_macs_kept: each arm's own threshold cut; test split" + (
                 f"; failed to train (a run stopped, e.g. a non-finite loss), listed without numbers: {', '.join(failed)}" if failed else ""))
fig, axes = plt.subplots(1, 2, figsize=(12, 1.6 + 0.5 * len(vs)), gridspec_kw={"wspace": 0.6})
y = np.arange(len(vs))
for ax, key, title in ((axes[0], "budget", "at DEAP's learned budget"), (axes[1], "uncompressed", "uncompressed")):
    pts = [(p, k + 0.1 * (i - (len(r[f"per_seed_{key}"]) - 1) / 2)) for k, r in enumerate(rows)
           for i, p in enumerate(r[f"per_seed_{key}"])]
    ax.errorbar([p["d_mAP"] for p, _ in pts], [yk for _, yk in pts], fmt="o", ms=4, color="tab:blue", capsize=2,
                xerr=[[p["d_mAP"] - p["d_low"] for p, _ in pts], [p["d_high"] - p["d_mAP"] for p, _ in pts]],
                label="one seed [95 % paired bootstrap]")
    mean = vs[f"d_{key}"].to_numpy(float)
    lo, hi = vs[f"d_{key}_low"].to_numpy(float), vs[f"d_{key}_high"].to_numpy(float)
    ax.errorbar(mean, y, xerr=[mean - lo, hi - mean], fmt="D", ms=5, color="k", capsize=3,
                label="mean over seeds [90 % t interval]")
    ax.axvline(0, color="tab:red", lw=1, label="ARKD")
    ax.axvspan(-1, 1, color="tab:gray", alpha=0.15, label="within +-1 point")
    ax.set(xlabel="mAP minus ARKD (points), test split", title=title)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    added = dict(zip(losses["arm"], losses["adaptation_params"]))
    ax.set_yticks(y, [f"{a} (+{added[a]:,} params)" if added[a] else a for a in vs["arm"]])
    ax.set_ylim(len(vs) - 0.5, -0.5)  # the table's order, top to bottom
R.save_figure(fig, out, "09_3_losses_vs_arkd", caption="Each loss in ARKD's place minus ARKD, per seed with its 95 % "
              "paired-bootstrap interval and over seeds with its 90 % t interval: at DEAP's learned budget and "
              "uncompressed; each arm labelled with the trainable parameters it adds")
table

# %%
R.record(out, "09_kd_losses", {
    "seeds": seeds, "uncompressed_seeds": useeds, "failed": failed, "budgets": {str(s): b for s, b in budgets.items()},
    "losses": R.table_records(losses), "vs_arkd": R.table_records(vs.drop(columns=["per_seed_budget",
                                                                                  "per_seed_uncompressed"])),
    "per_seed": {r["arm"]: {"budget": r["per_seed_budget"], "uncompressed": r["per_seed_uncompressed"]} for r in rows},
    "reference": ref_row,
})
