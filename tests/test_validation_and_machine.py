"""The validation split (a generated set of the same generator, another stream: probes and periodic
evaluations read it, the test split gives the reported numbers), what a run records about its machine and
start, the summary rows that carry them, and the refusal of a table whose runs come from two machines."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from deap_lib import results as R
from deap_lib.data.run_data import RunData
from deap_lib.machine import machine_label, run_machine
from deap_lib.methods import get_preset, run
from deap_lib.records import SUMMARY_COLUMNS


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("val")
    return {"data.root": str(base / "tiny"), "data.synthetic": "tiny", "data.val_root": str(base / "tiny_val"),
            "data.val_synthetic": "tiny_val", "optim.epochs": 2, "eval_every": 1}


def test_the_validation_split_is_another_sample_of_the_generator(roots):
    data = RunData(get_preset("quick", "teacher", **roots))
    name, query, gallery = data.eval_split()
    assert name == "val" and query is data.val_query and gallery is data.val_gallery
    val, test = data.val_dataset, data.dataset
    assert len(val.query) > 0 and len(val.gallery) > 0
    val_paths = {it.path for it in val.query + val.gallery}
    assert not val_paths & {it.path for it in test.query + test.gallery + test.train}
    # same protocol as the test split of its generator: every query identity has gallery images
    assert {it.pid for it in val.query} <= {it.pid for it in val.gallery}
    without = RunData(get_preset("quick", "teacher", **{k: v for k, v in roots.items() if "val" not in k}))
    assert without.eval_split()[0] == "test" and not without.has_val


def test_a_run_with_a_validation_split_records_both_splits_its_machine_and_start(roots, tmp_path):
    m = run(get_preset("quick", "teacher", **roots), tmp_path / "teacher", summary_csv=tmp_path / "summary.csv",
            progress=False)
    form = m["forms"]["teacher"]
    assert 0 <= form["val_mAP_low"] <= form["val_mAP"] <= form["val_mAP_high"] <= 100
    assert form["val_mAP"] != form["mAP"]  # another split, another number
    log = pd.read_csv(tmp_path / "teacher" / "train_log.csv")
    assert log["eval_split"].tolist() == ["val", "val"] and log["eval_mAP"].notna().all()
    assert m["start"] == "random" and m["epochs"] == 2  # the quick preset starts from random weights
    mc = m["machine"]
    assert mc["threads"] == 1 and mc["precision"] == m["runtime"]["precision"] and mc["processor"]
    rows = pd.read_csv(tmp_path / "summary.csv")
    assert list(rows.columns) == SUMMARY_COLUMNS
    row = rows.iloc[0]
    assert row["machine"] == machine_label(mc) and row["code"] == m["code_version"] and row["epochs"] == 2
    assert row["start"] == "random" and row["val_mAP"] == pytest.approx(form["val_mAP"], abs=1e-4)


def test_machine_labels_of_recorded_and_legacy_runs():
    info = {"processor": "AMD EPYC 9B14", "cores": 2, "torch": "2.14.1", "threads": 1, "precision": "bf16",
            "world_size": 1}
    assert machine_label(info) == "AMD EPYC 9B14 x2 | torch 2.14.1 | 1 thread | bf16"
    assert machine_label({**info, "world_size": 2, "threads": 4}) == \
        "AMD EPYC 9B14 x2 (2 processes) | torch 2.14.1 | 4 threads | bf16"
    legacy = {"device": "cpu", "torch": "2.9.1", "threads": 2}
    assert machine_label(run_machine(legacy)) == "unrecorded x? | torch 2.9.1 | 2 threads | fp32 (legacy)"
    assert run_machine({"machine": info}) == info


def _runs(machines):
    return pd.DataFrame([{"run": f"{m}-s{s}", "method": m, "seed": s, "form": "teacher" if m == "teacher" else
                          "absorbed", "deployed": True, "mAP": 50.0 + s, "rank1": 60.0, "mINP": 20.0,
                          "params_no_classifier": 1e6, "macs": 1e8, "machine": mach}
                         for (m, s), mach in machines.items()])


def test_a_table_of_runs_from_two_machines_refuses_naming_them():
    runs = _runs({("teacher", 0): "A | torch 2.14.1 | 1 thread | bf16", ("deap", 0): "A | torch 2.14.1 | 1 thread | bf16",
                  ("teacher", 1): "B | torch 2.9.1 | 1 thread | fp32", ("deap", 1): "A | torch 2.14.1 | 1 thread | bf16"})
    for build in (R.main_table, R.seed_summary, R.seed_differences):
        with pytest.raises(ValueError, match=r"2 machines .*B \| torch 2.9.1 \| 1 thread \| fp32: teacher-s1"):
            build(runs)
    one = runs[runs["machine"].str.startswith("A")]
    assert R.one_machine(one, "x") is one
    summary = R.seed_summary(one)  # one machine: builds
    assert set(summary["method"]) == {"teacher", "deap"}
