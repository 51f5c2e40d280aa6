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
# # 00 - Data
#
# Locate (or generate) the dataset, count identities / images / cameras per split and show sample identities across cameras.

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

# %%
import sys
from pathlib import Path

import pandas as pd

from deap_lib import results as R
from deap_lib.study import Study

study = Study.from_notebook(globals())  # paths relative to the repository root
study

# %% [markdown]
# ## The dataset
#
# **Table 00_1** counts identities, images and cameras per split. Training identities never appear in the
# test splits (query and gallery share theirs), as in VeRi-776 (576 training identities / 37,778 images; 200
# test identities, 1,678 queries, 11,579 gallery images, 20 cameras; docs/study.rst §Datasets). Read it to check the
# scale of the study: the embedded synthetic set is far smaller than VeRi-776, which bounds every mAP below.

# %%
ds = study.prepare_data()
cfg = study.config("teacher")
print(ds.summary_table())
summary = ds.summary()
stats = pd.DataFrame([{"split": s, **v} for s, v in summary.items()])
R.save_table(stats, out, "00_1_dataset_stats",
             caption=f"Dataset `{ds.name}`: identities, images and cameras per split")
stats

# %% [markdown]
# **Figure 00_2**: sample test identities (rows) seen by different cameras (columns). Re-identification
# must match a vehicle across these views; for the synthetic set each tile is labelled with its identity,
# camera and generating factors (type, colour), so one can see which nuisances (pose, light, occlusion,
# camera style) separate two images of the same vehicle.

# %%
root = Path(ds.root)
synthetic = (root / "factors.csv").is_file()
if synthetic:
    from deap_lib.data import read_factors, sample_grid

    grid = sample_grid(root, n_ids=6, split="test", max_cams=6, seed=seed)
else:
    from deap_lib.study import dataset_grid

    grid = dataset_grid(ds, n_ids=6, max_cams=6, seed=seed)
R.save_image(grid, out, "00_2_identity_grid", caption="Sample test identities (rows) across cameras (columns)")
grid

# %% [markdown]
# **Table 00_3** (synthetic data only): identities per vehicle type and split. Types with few identities
# are the ones where visually similar vehicles of different identities are most often confused.

# %%
if synthetic:
    factors = pd.DataFrame(read_factors(root))
    factors["split"] = factors["split"].replace({"query": "test", "gallery": "test"})
    mix = (factors.drop_duplicates(["split", "pid"]).groupby(["type", "split"]).size()
           .unstack(fill_value=0).reset_index())
    R.save_table(mix, out, "00_3_vehicle_types", caption="Synthetic identities per vehicle type and split")
    display(mix)

# %%
cams = {s: v["cameras"] for s, v in summary.items()}
R.record(out, "00_data", {
    "dataset": ds.name, "synthetic": synthetic, "preset": preset,
    "train_ids": summary["train"]["ids"], "train_images": summary["train"]["images"],
    "query_ids": summary["query"]["ids"], "query_images": summary["query"]["images"],
    "gallery_ids": summary["gallery"]["ids"], "gallery_images": summary["gallery"]["images"],
    "cameras": max(cams.values()), "python": sys.executable,
})
