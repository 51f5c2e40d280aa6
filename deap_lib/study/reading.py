"""Reading a study's finished runs: their metrics, one table row per (run, form), training logs, pruner
norms; and a picture of a dataset's identities."""
from __future__ import annotations

import os
from typing import Any, Dict, Union

import numpy as np

from ..machine import machine_label, run_machine
from ..records import SUMMARY_FORMS
from ..rundir import RunDir, deployed_form, finished_runs

PathLike = Union[str, "os.PathLike[str]"]


class RunReading:
    """The reading half of :class:`~deap_lib.study.Study` (a mixin)."""

    # ---------------------------------------------------------------------------------------------- reading
    def metrics(self, run_dir: PathLike) -> Dict[str, Any]:
        return RunDir(run_dir).metrics

    def load_runs(self, all_presets: bool = False, used: bool = False):
        """One row per (run, form) of every finished run under ``runs_dir/<preset>/`` (every preset with
        ``all_presets``): run, run_dir, method, tag, preset, dataset, seed, form, deployed (the run's deployed
        form), the form's metrics (mAP, intervals, rank-k, mINP, params, params_no_classifier, macs), and
        arch (backbone and width), wall_time_s, epochs, target_macs, threshold from the run's config. Runs without a benchmark form (the
        pre-training, evaluated on its own corpus) are left out. ``used``: only the runs this study's results
        folder records in ``summary.csv`` (those its executed notebooks trained or reused), not every run
        lying in the runs folder."""
        import pandas as pd

        root = self._abs(self.runs_dir)
        rows = []
        for rd in finished_runs(root, "*/*" if all_presets else f"{self.preset}/*"):
            m, p = rd.metrics, rd.metrics_path
            if not set(m["forms"]) & set(SUMMARY_FORMS):
                continue
            cfg = m.get("config", {})
            name, method, seed = p.parent.name, m["method"], m["seed"]
            tag = name[len(method) + 1: -len(f"-s{seed}")] if name.startswith(method + "-") else ""
            dep = deployed_form(m["forms"])
            machine = machine_label(run_machine(m))
            for form, r in m["forms"].items():
                row = {"run": name, "run_dir": str(p.parent), "method": method, "tag": tag,
                       "preset": m["preset"], "dataset": m["dataset"], "seed": seed, "form": form,
                       "deployed": form == dep}
                row.update({k: v for k, v in r.items() if not k.endswith("_text")})
                row["mAP_text"] = r.get("mAP_text")
                mc = cfg.get("model", {})
                row["arch"] = f"{mc.get('arch')} x{mc.get('width')}"
                row.update(machine=machine, code=m.get("code_version"), start=m.get("start"))
                row.update(wall_time_s=m.get("wall_time_s"), epochs=m.get("epochs", cfg.get("optim", {}).get("epochs")),
                           target_macs=cfg.get("prune", {}).get("target_macs"),
                           threshold=cfg.get("prune", {}).get("threshold"))
                rows.append(row)
        table = pd.DataFrame(rows)
        if used and not table.empty:
            recorded = set(pd.read_csv(self.summary_csv)["run"].map(lambda r: str(r).rsplit("/", 1)[-1])) \
                if self.summary_csv.is_file() else set()
            table = table[table["run"].isin(recorded)].reset_index(drop=True)
        return table

    @staticmethod
    def train_log(run_dir: PathLike):
        """:meth:`deap_lib.rundir.RunDir.train_log` of ``run_dir``."""
        return RunDir(run_dir).train_log()

    @staticmethod
    def pruner_norms(run_dir: PathLike) -> Dict[int, np.ndarray]:
        """:meth:`deap_lib.rundir.RunDir.pruner_norms` of ``run_dir``."""
        return RunDir(run_dir).pruner_norms()


def dataset_grid(dataset, n_ids: int = 6, *, max_cams: int = 6, seed: int = 0, size: int = 64):
    """A PIL grid of test identities (rows) seen by different cameras (columns) for any ``ReIDDataset``."""
    from PIL import Image

    items = list(dataset.query) + list(dataset.gallery)
    by_id: Dict[int, Dict[int, str]] = {}
    for it in items:
        by_id.setdefault(int(it[1]), {}).setdefault(int(it[2]), str(it[0]))
    pids = sorted(p for p, cams in by_id.items() if len(cams) > 1) or sorted(by_id)
    if not pids:
        raise ValueError(f"dataset_grid: {dataset.name} has no query/gallery images")
    rng = np.random.default_rng(seed)
    chosen = sorted(int(p) for p in rng.choice(pids, min(n_ids, len(pids)), replace=False))
    gap = 2
    out = Image.new("RGB", (max_cams * (size + gap), len(chosen) * (size + gap)), (255, 255, 255))
    for i, pid in enumerate(chosen):
        for j, cam in enumerate(sorted(by_id[pid])[:max_cams]):
            with Image.open(by_id[pid][cam]) as im:
                out.paste(im.convert("RGB").resize((size, size)), (j * (size + gap), i * (size + gap)))
    return out
