"""The study notebooks: committed clean, and executed headlessly with papermill (quick preset, 2 epochs).

One module-scoped ``python -m deap_lib reproduce`` run executes notebooks 00-07 in order into temporary
runs/results folders (the teacher is trained once and shared); the tests then check each notebook's
recorded metrics, its tables/figures, the README section and that a second reproduce reuses everything.
"""
from __future__ import annotations

import ast
import json
import hashlib
import math
import numpy as np
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from deap_lib import results as R
from deap_lib.study import deployed_form
from deap_lib.notebooks import NOTEBOOKS, PARAMETERS, notebook_dir
from deap_lib.reproduce import (clear_stage_outputs, kernel_python,
                                 notebook_parameters, reproduce)

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 2
# Budget of notebook 02 in the test. With the default 0.3 the quick preset's tiny student is cut to one channel
# per block, BatchNorm re-calibration then meets near-constant channels (running_var ~ 0) and the runner's
# fp32 absorption check fails in ~40 % of runs (see the report to the lead); 0.5 keeps the test reliable.
TARGET_MACS = 0.5
#: seeds of the main runs in the executed study (the full study's default is three; two keep the test short)
SEEDS = (0, 1)
#: notebook 02's sparsity weights on the validation split (the quick preset's own 0.05 and one more)
LAMBDAS = (0.05, 0.2)
MAIN = ("teacher", "kd", "kd_slim", "deap")


def _main_run(study, method, seed):
    """Notebook 02's run folder of a main method (DEAP cuts by its threshold: no budget in its name)."""
    return study["runs"] / "quick" / f"{method}-s{seed}"


# ------------------------------------------------------------------------------------------------ committed
RUN_FILES = ("metrics.json", "model.pt", "absorbed.pt", "per_query_", "pruner_norms.json", "train_log.csv", "last.pt")


def _run_file_literals(source: str):
    """String constants of ``source`` (docstrings and comments aside) that name a run folder's files."""
    tree = ast.parse(source)
    bare = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in bare and any(f in n.value for f in RUN_FILES)]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_read_run_folders_through_rundir(name):
    """A notebook never builds a run folder's file names: deap_lib.rundir.RunDir owns them."""
    assert _run_file_literals((notebook_dir() / f"{name}.py").read_text()) == []
    planted = 'x = np.load(Path(run) / "per_query_teacher.npz")\ny = f"{run}/metrics.json"\n'
    assert sorted(ln for ln, _ in _run_file_literals(planted)) == [1, 2]  # the check catches both spellings


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_committed_clean_with_parameters(name):
    nb = nbformat.read(notebook_dir() / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: committed with outputs"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name}: needs exactly one cell tagged 'parameters'"
    assigned = {t.id for node in ast.parse(tagged[0].source).body if isinstance(node, ast.Assign)
                for t in node.targets}
    assert set(PARAMETERS) <= assigned, f"{name}: parameters cell lacks {sorted(set(PARAMETERS) - assigned)}"


def test_every_notebook_is_a_jupytext_pair_in_sync():
    """``NN_name.ipynb`` and its percent-format ``NN_name.py`` hold the same cells (types, sources, tags)."""
    import jupytext

    found = sorted(p.stem for p in notebook_dir().glob("[0-9][0-9]_*.ipynb"))
    assert found == sorted(NOTEBOOKS) == sorted(p.stem for p in notebook_dir().glob("[0-9][0-9]_*.py"))
    for name in NOTEBOOKS:
        nb = nbformat.read(notebook_dir() / f"{name}.ipynb", as_version=4)
        py = jupytext.read(notebook_dir() / f"{name}.py")
        assert nb.metadata["jupytext"]["formats"] == "ipynb,py:percent"
        key = [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells]
        assert key == [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in py.cells], \
            f"{name}.ipynb and {name}.py differ: open and save one in JupyterLab, or `jupytext --sync`"


def test_every_figure_and_table_is_introduced_in_markdown():
    """Each cell that saves a figure or table follows a markdown cell that names it (what, how to read it)."""
    import re

    for name in NOTEBOOKS:
        nb = nbformat.read(notebook_dir() / f"{name}.ipynb", as_version=4)
        prose = ""
        for c in nb.cells:
            if c.cell_type == "markdown":
                prose += c.source
                continue
            for kind, ident in re.findall(r'R\.save_(table|figure)\([^,]+, out, "(\d\d_\d)_', c.source):
                label = f"{'Table' if kind == 'table' else 'Figure'} {ident}"
                assert label in prose, f"{name}: {label} is saved before any markdown introduces it"


def test_notebook_parameters_parsed():
    assert notebook_parameters(notebook_dir() / "02_dilemma.ipynb") == list(PARAMETERS) + ["target_macs", "lambdas",
                                                                                        "seeds", "margin"]
    assert notebook_parameters(notebook_dir() / "01_teacher.ipynb") == list(PARAMETERS) + ["convergence", "seeds",
                                                                                       "pretrain"]


def test_kernel_is_this_interpreter():
    assert Path(kernel_python("python3")).parent == Path(sys.executable).parent
    with pytest.raises(RuntimeError, match="ipykernel install"):
        kernel_python("no-such-kernel-deap")


def test_reproduce_rejects_bad_arguments(tmp_path):
    kw = dict(preset="quick", out=str(tmp_path / "r"), readme=None, log=lambda m: None)
    with pytest.raises(KeyError, match="target_makcs"):
        reproduce(**kw, parameters={"target_makcs": 0.5})
    with pytest.raises(KeyError, match="latency_rounds"):  # 04 defines it, 02 alone does not
        reproduce(**kw, notebooks=["02_dilemma"], parameters={"latency_rounds": 1})
    with pytest.raises(ValueError, match="own arguments"):
        reproduce(**kw, parameters={"epochs": 3})
    with pytest.raises(KeyError, match="99_nope"):
        reproduce(**kw, notebooks=["99_nope"])
    with pytest.raises(KeyError, match="preset"):
        reproduce(**{**kw, "preset": "huge"})
    assert not (tmp_path / "r").exists()  # nothing ran


def test_clear_stage_outputs(tmp_path):
    for rel in ("tables/02_1_x.csv", "tables/02_1_x.md", "figures/02_2_y.png", "records/02_dilemma.json",
                "tables/03_1_z.csv", "records/reproduce.json", "figures/02_notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    removed = clear_stage_outputs(tmp_path, "02_dilemma")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in removed) == [
        "figures/02_2_y.png", "records/02_dilemma.json", "tables/02_1_x.csv", "tables/02_1_x.md"]
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["figures/02_notes.txt", "records/reproduce.json", "tables/03_1_z.csv"]


# ------------------------------------------------------------------------------------------------ executed
@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    readme = root / "README.md"
    readme.write_text(f"# t\n\n{R.HEADLINE_START}\n{R.HEADLINE_END}\n")
    committed = _tree_digest()  # the committed study: a quick study must leave it untouched
    kw = dict(preset="quick", data_root=str(root / "data"), runs_dir=str(root / "runs"),
              epochs=EPOCHS, jobs=2, readme=readme, cwd=REPO, log=lambda m: None,
              notebooks=list(NOTEBOOKS),  # every notebook: the core (00-04) and the full study's others
              parameters={"target_macs": TARGET_MACS, "latency_rounds": 2, "lambdas": list(LAMBDAS),
                          "lengths": [0.5, 2.0],  # notebook 08: 2 epochs (every run's) and 4
                          "convergence": True, "seeds": list(SEEDS),
                          "pretrain": True})
    import io

    from deap_lib.reproduce import ProgressEcho

    echoed = io.StringIO()
    t0 = time.time()
    report = reproduce(**kw, echo=ProgressEcho(echoed))
    seconds = time.time() - t0
    return {"echoed": echoed.getvalue(), "root": root, "results": root / "runs" / "quick" / "results",
            "runs": root / "runs", "readme": readme, "kw": kw, "report": report, "seconds": seconds,
            "committed": committed}


def _tree_digest():
    """SHA-256 of every file of the committed ``results/`` and of README.md in this checkout."""
    h = hashlib.sha256()
    for p in sorted((REPO / "results").rglob("*")) + [REPO / "README.md"]:
        if p.is_file():
            h.update(p.relative_to(REPO).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def test_a_quick_study_writes_beside_its_runs_and_leaves_the_committed_study_alone(study):
    from deap_lib.reproduce import default_out, default_readme

    assert _tree_digest() == study["committed"]
    assert (study["results"] / "records" / "reproduce.json").is_file()
    assert default_out("quick", "runs") == "runs/quick/results" and default_out("cpu", "runs") == "results"
    assert default_readme("quick", "runs/quick/results") is None
    assert default_readme("cpu", "results") == "README.md" and default_readme("cpu", "elsewhere") is None
    assert default_readme("quick", "x", "R.md") == "R.md"


def _rec(study, name):
    return R.load_record(study["results"], name)


def _pct(v):
    return isinstance(v, (int, float)) and math.isfinite(v) and 0.0 <= v <= 100.0


def _interval(d, key="mAP"):
    return d[f"{key}_low"] - 1e-9 <= d[key] <= d[f"{key}_high"] + 1e-9


def test_reproduce_echoes_what_the_training_behind_a_notebook_does(study):
    """A newcomer sees the runs start and finish (and, outside CI, their epochs and the time left)."""
    lines = study["echoed"].splitlines()
    assert lines and all(line.startswith(("[study]", "[progress]")) for line in lines)
    assert any(line.startswith("[study] teacher-s0: training") for line in lines)
    assert any(line.startswith("[study] deap-") and " done in " in line for line in lines)


def test_all_notebooks_executed(study):
    assert [r["name"] for r in study["report"]] == list(NOTEBOOKS)
    assert all(r["executed"] for r in study["report"])
    for name in NOTEBOOKS:
        nb = nbformat.read(study["results"] / "executed" / f"{name}.ipynb", as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert len(injected) == 1 and "preset = \"quick\"" in injected[0].source
        stamp = json.loads((study["results"] / "executed" / f"{name}.stamp.json").read_text())
        assert stamp["parameters"]["preset"] == "quick" and stamp["parameters"]["epochs"] == EPOCHS
    print(f"\nreproduce (quick, {EPOCHS} epochs): {study['seconds']:.1f} s; "
          + ", ".join(f"{r['name']} {r['seconds']:.0f} s" for r in study["report"]))


def test_00_data(study):
    r = _rec(study, "00_data")
    assert r["synthetic"] is True and r["dataset"] == "veri"
    from deap_lib.data.synthetic import SYNTHETIC

    tiny = SYNTHETIC["tiny"]  # the quick preset's generator settings
    assert r["train_ids"] == tiny["num_train_ids"] and r["query_ids"] == r["gallery_ids"] == tiny["num_test_ids"]
    assert r["train_images"] >= r["train_ids"] and r["query_images"] > 0 and r["gallery_images"] > 0
    assert r["cameras"] >= 2
    assert Path(r["python"]).parent == Path(sys.executable).parent  # the kernel runs this interpreter
    assert (study["results"] / "figures" / "00_2_identity_grid.png").read_bytes()[:4] == b"\x89PNG"


def test_01_teacher(study):
    r = _rec(study, "01_teacher")
    assert _pct(r["teacher_mAP"]) and _pct(r["student_mAP"]) and _pct(r["teacher_rank1"])
    assert r["teacher_mAP_low"] <= r["teacher_mAP"] <= r["teacher_mAP_high"]
    assert r["teacher_params_m"] > 0 and r["teacher_macs_m"] > 0
    assert r["epochs"] == EPOCHS and r["eval_points"] == EPOCHS  # eval_mAP logged every epoch
    assert math.isfinite(r["final_loss_teacher"]) and r["final_loss_teacher"] > 0
    assert (Path(r["teacher_run"]) / "model.pt").is_file()
    c = r["convergence"]  # the doubled-schedule teacher, compared on the same queries
    assert c["epochs_long"] == 2 * c["epochs"] == 2 * EPOCHS and _pct(c["mAP_long"])
    assert c["d_mAP_low"] - 1e-9 <= c["d_mAP"] <= c["d_mAP_high"] + 1e-9
    assert abs(c["d_mAP"] - (c["mAP_long"] - c["mAP"])) < 1e-6  # the paired point estimate is the difference
    assert (study["runs"] / "quick" / "teacher-x2-s0" / "model.pt").is_file()
    assert r["seeds"] == list(SEEDS)
    # with every run at the study's 2 epochs the plain student's config is the teacher's: it is the teacher,
    # read from the teacher run, not trained twice
    assert r["student_is_teacher"] is True and r["student_mAP"] == r["teacher_mAP"]
    assert not (study["runs"] / "quick" / "student-s0").exists()
    assert set(r["per_seed"]) == {f"teacher-s{s}" for s in SEEDS}
    assert all(_pct(v) for v in r["per_seed"].values())
    assert r["per_seed"]["teacher-s0"] == r["teacher_mAP"]
    p = r["pretraining"]  # the stand-in for ImageNet, trained on its own corpus, and its transfer gain
    assert p["pretrain_corpus"] == "tiny_pretrain" and p["pretrain_epochs"] == EPOCHS
    assert _pct(p["pretrain_mAP_own_corpus"]) and _pct(p["student_random_mAP"]) and _pct(p["student_pretrained_mAP"])
    assert abs(p["gain"] - (p["student_pretrained_mAP"] - p["student_random_mAP"])) < 1e-6
    assert p["gain_low"] - 1e-9 <= p["gain"] <= p["gain_high"] + 1e-9
    assert (study["runs"] / "quick" / "pretrain-s0" / "model.pt").is_file()
    assert (study["results"] / "tables" / "01_5_pretraining.csv").is_file()
    assert (study["results"] / "figures" / "01_6_pretraining_curves.png").is_file()


def test_seeds_are_separate_runs(study):
    """Every main method ran once per seed, each distillation run with the teacher of its own seed."""
    for s in SEEDS:
        for m in ("teacher", "kd", "deap"):
            assert (_main_run(study, m, s) / "metrics.json").is_file(), f"{m}-s{s}"
        kd = json.loads((_main_run(study, "kd", s) / "metrics.json").read_text())
        assert kd["seed"] == s and kd["config"]["teacher_path"].endswith(f"teacher-s{s}/model.pt")
    a, b = (json.loads((_main_run(study, "teacher", s) / "metrics.json").read_text()) for s in SEEDS)
    assert a["forms"]["teacher"]["mAP"] != b["forms"]["teacher"]["mAP"]  # the seed changes the run


def test_02_dilemma(study):
    r = _rec(study, "02_dilemma")
    assert r["epochs"] == r["teacher_epochs"] == EPOCHS  # one schedule for the teacher and every student
    assert r["budget"] == TARGET_MACS  # given here; by default DEAP's learned share
    methods = r["methods"]
    assert set(methods) == set(MAIN)  # the plain student is the teacher here (notebook 01)
    deap = json.loads((_main_run(study, "deap", 0) / "metrics.json").read_text())
    assert deap["config"]["prune"]["target_macs"] is None and deap["config"]["prune"]["schedule"] == "end"
    f = deap["forms"]
    assert r["deap_macs_kept"] == pytest.approx(f["absorbed"]["macs"] / f["unpruned"]["macs"])
    for m, d in methods.items():
        assert _pct(d["mAP"]) and _interval(d), m
        assert d["d_mAP_low"] - 1e-9 <= d["d_mAP"] <= d["d_mAP_high"] + 1e-9, m
        assert (0.0 < d["macs_fraction"] <= 1.0) if m in ("kd_slim", "deap") else d["macs_fraction"] == 1.0, m
    assert methods["teacher"]["d_mAP"] == 0.0
    assert all(v is not None for v in r["val_mAP"].values())  # every run evaluated on the validation split
    # the choice of lambda: recomputed from the probes table with the rule, never reading the test split
    probes = pd.read_csv(study["results"] / "tables" / "02_9_lambda_choice.csv")
    assert set(probes["method"]) == {"deap", "kd_slim"} and sorted(set(probes["lam"])) == sorted(LAMBDAS)
    t_val = r["val_mAP"]["teacher"]
    for m, g in probes.groupby("method"):
        ok = g[g["val_mAP"] >= t_val - 1.0]
        want = ok["lam"].max() if len(ok) else g["lam"].min()
        assert r["lambda_choice"][m]["lam"] == want and g.loc[g["chosen"], "lam"].tolist() == [want], m
    assert set(r["at_budget"]) == {"kd_slim", "thinned_kd", "kd_np_direct", "np"}
    for name, d in r["at_budget"].items():
        assert d["d_low"] - 1e-9 <= d["d_mAP"] <= d["d_high"] + 1e-9, name
    budget_runs = pd.read_csv(study["results"] / "tables" / "02_11_at_deap_budget.csv")
    assert {"thinned_kd", "kd_slim", "np", "kd_np_direct"} <= set(budget_runs["method"])
    vs = r["deap_vs"]  # DEAP minus every other deployed model, paired over the same queries
    assert set(vs) == set(methods) - {"deap"}
    for m, d in vs.items():
        assert d["d_low"] - 1e-9 <= d["d_mAP"] <= d["d_high"] + 1e-9 and 0.0 <= d["p_better"] <= 1.0, m
        assert abs(d["d_mAP"] - (methods["deap"]["mAP"] - methods[m]["mAP"])) < 1e-6, m
    st = r["seed_stats"]  # over seeds: recomputed here from the runs' own metrics files
    assert st["seeds"] == list(SEEDS) and set(st["methods"]) == set(MAIN)
    for m in ("teacher", "kd", "deap"):
        vals = [json.loads((_main_run(study, m, s) / "metrics.json").read_text()) for s in SEEDS]
        vals = [x["forms"][deployed_form(x["forms"])]["mAP"] for x in vals]
        d = st["methods"][m]
        assert d["n_seeds"] == len(SEEDS) and d["mAP_mean"] == pytest.approx(sum(vals) / len(vals)), m
        assert d["mAP_std"] == pytest.approx(abs(vals[0] - vals[1]) / math.sqrt(2)), m  # two values, ddof 1
    pairs = {(v["model"], v["against"]) for v in st["verdicts"]}
    assert pairs == {("deap", "teacher"), ("deap", "kd"), ("kd_slim", "teacher"), ("kd_slim", "kd"), ("kd", "teacher")}
    for v in st["verdicts"]:
        per = [float(x) for x in v["per_seed"].split()]
        assert len(per) == len(SEEDS) and v["mean"] == pytest.approx(sum(per) / len(per), abs=1e-2)
        assert v["verdict"] in ("equivalent", "better", "worse", "inconclusive")


def test_03_deap(study):
    r = _rec(study, "03_deap")
    assert r["threshold"] == 1e-3
    assert all(_pct(r[k]) for k in ("mAP_unpruned", "mAP_pruned", "mAP_absorbed"))
    assert abs(r["mAP_pruned"] - r["mAP_absorbed"]) < 0.01  # absorption does not change the function
    assert 0.0 < r["kept_fraction"] <= 1.0 and 0.0 <= r["frac_below_thr_final"] <= 1.0
    assert r["epochs_logged"] == EPOCHS
    assert {"ce", "triplet", "kl", "dl", "arkd", "lasso1", "lasso2"} <= set(r["loss_terms"])
    assert r["ablation"] == {}  # full=False


def test_04_absorb(study):
    r = _rec(study, "04_absorb_and_plots")
    assert r["absorb_max_rel"] < 1e-4 and r["run_absorb_max_rel"] < 1e-4
    assert 0.0 < r["kept_fraction"] <= 1.0
    assert _pct(r["teacher_mAP"]) and _pct(r["deap_mAP"])
    assert -5.0 < r["deap_params_reduction_pct"] < 100.0 and -5.0 < r["deap_macs_reduction_pct"] < 100.0
    assert r["deap_d_mAP_low"] - 1e-9 <= r["deap_d_mAP"] <= r["deap_d_mAP_high"] + 1e-9
    assert {"teacher", "deap", "kd", "np"} <= set(r["methods"])
    assert r["n_runs"] >= 11  # teacher, student, kd, 5 pruning methods at the budget, DEAP with its own rule,
    # CDD and DEAP at notebook 05's budget (05 runs before 04)
    assert set(r["latency_speedup"]) == {f"{m}@{b}" for m in ("teacher_folded", "teacher", "unpruned", "pruned",
                                                              "absorbed") for b in (1, 16)}
    assert all(0.0 < v < 100.0 for v in r["latency_speedup"].values())
    assert r["latency_speedup"]["teacher_folded@1"] == 1.0  # the reference: the BN-folded teacher
    assert len(r["deap_kept_widths"]) == len(r["deap_original_widths"]) == 16 and r["deploy_runtimes"] == []


def test_05_cdd(study):
    r = _rec(study, "05_cdd")
    assert r["seeds"] == list(SEEDS) and r["epochs"] == EPOCHS
    for s in map(str, SEEDS):
        assert r["runs"][s] == {"cdd": f"cdd-s{s}", "deap": f"deap-s{s}"}  # each by its own rule: no budget
        d = r["deap_minus_cdd"][s]  # the same runs as notebook 02's, compared on the same queries
        assert abs(d["d_mAP"] - (r["deap_mAP"][s] - r["cdd_mAP"][s])) < 1e-6
        assert d["d_low"] - 1e-9 <= d["d_mAP"] <= d["d_high"] + 1e-9
        cdd = json.loads((study["runs"] / "quick" / r["runs"][s]["cdd"] / "metrics.json").read_text())
        assert cdd["forms"]["absorbed"]["mAP"] == r["cdd_mAP"][s]
        assert r["cdd_macs_kept"][s] == cdd["forms"]["absorbed"]["macs"] / cdd["forms"]["unpruned"]["macs"]
    o = r["over_seeds"]["DEAP - CDD"]
    per_seed = [r["deap_mAP"][s] - r["cdd_mAP"][s] for s in map(str, SEEDS)]
    assert o["per_seed"] == " ".join(f"{x:+.2f}" for x in per_seed)
    assert abs(o["mean"] - np.mean(per_seed)) < 1e-9 and o["ci_low"] <= o["mean"] <= o["ci_high"]
    assert set(r["over_seeds"]) == {"DEAP - CDD", "CDD - teacher"}
    assert all(0.0 <= v <= 1.0 for v in r["masked_share_final"])
    assert r["resetting_ablation"] == {} and r["at_deap_budget"] == {}  # full=False


def test_06_resolution(study):
    r = _rec(study, "06_resolution")
    assert r["scales"] == [0.5] and r["seeds"] == list(SEEDS) and r["ablation"] == []  # full=False
    hr = tuple(r["hr_size"])
    pts = {(p["method"], p["scale"]): p for p in r["points"]}
    for label in ("LR student", "LR logit KD", "crkd", "DEAP at LR"):
        p = pts[(label, 0.5)]
        assert p["input"] == f"{hr[0] // 2}x{hr[1] // 2}" and _interval(p)
    # the same network at half the side costs about a quarter of the MACs; DEAP at LR cuts further
    assert 0.2 < pts[("crkd", 0.5)]["macs_m"] / pts[("HR teacher", 1.0)]["macs_m"] < 0.3
    assert pts[("DEAP at LR", 0.5)]["macs_m"] < pts[("crkd", 0.5)]["macs_m"]
    assert r["temperature"] == {"0.5": 4.0}
    crkd = json.loads((study["runs"] / "quick" / f"crkd-lr{hr[0] // 2}x{hr[1] // 2}-s0" / "metrics.json").read_text())
    assert crkd["forms"]["student"]["mAP"] == r["crkd_mAP"] == pts[("crkd", 0.5)]["mAP"]
    assert crkd["config"]["data"]["hr_size"] == list(hr) and crkd["config"]["model"]["input_size"] == [hr[0] // 2, hr[1] // 2]
    for row in r["crkd_vs_lr_baselines"]:
        assert row["d_low"] - 1e-9 <= row["d_mAP"] <= row["d_high"] + 1e-9
    assert {o["vs"] for o in r["crkd_vs_lr_baselines_over_seeds"]} == {"LR student", "LR logit KD"}
    assert {c["student"] for c in r["cross_resolution"]} == {"LR student", "LR logit KD", "crkd", "DEAP at LR",
                                                            "HR student, tested at LR"}
    assert all(_pct(c["cross_mAP"]) and c["cross_low"] <= c["cross_mAP"] <= c["cross_high"]
               for c in r["cross_resolution"])


def test_07_structure(study):
    r = _rec(study, "07_structure")
    assert r["budgets"] == [TARGET_MACS] and r["params_budget"] == r["mobilenet"] == r["rounded_widths"] == {}  # core
    rows = {x["method"]: x for x in r["sweep"] if x.get("rule") in (None, "budget")}
    assert {"teacher", "kd (uncompressed)", "structure_kd", "deap", "kd_slim", "thinned_kd"} == set(rows)
    own = {(x["method"], x["rule"]) for x in r["sweep"] if (x.get("rule") or "").startswith("own cut")}
    assert own == {(m, f"own cut, lambda={lam:g}") for m in ("deap", "kd_slim") for lam in LAMBDAS}  # 02's sweep
    assert rows["teacher"]["macs_frac"] == 1.0 and rows["teacher"]["budget"] is None
    # the structure-learning cut fills the budget within 1 %, the others stay within it
    assert TARGET_MACS - 0.01 <= rows["structure_kd"]["macs_frac"] <= TARGET_MACS
    assert all(rows[m]["macs_frac"] <= TARGET_MACS + 1e-9 for m in ("deap", "kd_slim", "thinned_kd"))
    assert r["runs"][f"deap|macs|{TARGET_MACS}"] == f"quick/deap-bn_recalib_batches20_target_macs{TARGET_MACS}-s0"
    deap = json.loads((study["runs"] / r["runs"][f"deap|macs|{TARGET_MACS}"] / "metrics.json").read_text())
    assert deap["forms"]["absorbed"]["mAP"] == rows["deap"]["mAP"]
    name = r["runs"][f"structure_kd|macs|{TARGET_MACS}"]
    assert name == f"quick/structure_kd-init_from_teacherFalse_target_macs{TARGET_MACS}-s0"  # one start: pre-training
    sk = json.loads((study["runs"] / name / "metrics.json").read_text())
    assert sk["forms"]["absorbed"]["mAP"] == rows["structure_kd"]["mAP"] and sk["absorb_verification"]["max_rel"] < 1e-6
    assert sk["start"] != "teacher"
    assert {d["structure_kd vs"] for d in r["structure_kd_minus"]} == {"deap", "kd_slim", "thinned_kd"}
    for w in r["within_margin"]["rows"]:  # table 07_10: the largest reduction within the margin, or the best
        pts = [x for x in r["sweep"] if x["method"] == w["method"] and x.get("rule")]
        ok = [x for x in pts if x["d_teacher"] >= -r["within_margin"]["margin"]]
        assert w["qualifies"] == bool(ok)
        assert w["macs_removed"] == pytest.approx(1 - (min(x["macs_frac"] for x in ok) if ok else
                                                       max(pts, key=lambda x: x["d_teacher"])["macs_frac"]))
    for d in r["structure_kd_minus"]:
        assert d["d_low"] - 1e-9 <= d["d_mAP"] <= d["d_high"] + 1e-9
    w = r["wall_time_s"][0]
    assert w["structure_kd/deap"] == pytest.approx(w["structure_kd"] / w["deap"])
    main = pd.read_csv(study["results"] / "tables" / "04_1_main_table.csv")  # 07 runs before the summary
    assert {"structure_kd", "thinned_kd"} <= set(main["method"])


def test_08_factors(study):
    r = _rec(study, "08_factors")
    assert r["budget"] == TARGET_MACS and r["lengths"] == [EPOCHS, 2 * EPOCHS]
    starts = {(x["method"], x["start"]): x for x in r["start"]}
    assert set(starts) == {(m, s) for m in ("deap", "kd_slim", "thinned_kd") for s in ("pre-trained", "teacher")}
    for m in ("deap", "kd_slim", "thinned_kd"):
        t, p = starts[(m, "teacher")], starts[(m, "pre-trained")]
        assert t["recorded_start"] == "teacher" and p["recorded_start"] != "teacher", m  # what each run recorded
        assert abs(t["d_teacher_start"] - (t["mAP"] - p["mAP"])) < 1e-6 and t["d_low"] <= t["d_teacher_start"] <= t["d_high"]
    deap_t, = [json.loads(p.read_text()) for p in (study["runs"] / "quick").glob("deap-pretrained_path*-s0/metrics.json")]
    assert deap_t["config"]["pretrained_path"].endswith("teacher-s0/model.pt") and deap_t["start"] == "teacher"
    length = {(x["method"], x["epochs"]): x for x in r["length"]}
    assert set(length) == {(m, e) for m in ("deap", "kd_slim", "thinned_kd") for e in (EPOCHS, 2 * EPOCHS)}
    assert all(_pct(x["mAP"]) and 0 < x["macs_kept"] <= 1.0 + 1e-9 for x in length.values())
    assert {x["deap vs"] for x in r["two_stage"]} == {"kd_then_np", "np_then_kd"}


def test_09_kd_losses(study):
    r = _rec(study, "09_kd_losses")
    assert r["seeds"] == list(SEEDS) and r["uncompressed_seeds"] == [0]
    assert [x["arm"] for x in r["losses"]] == ["ARKD (DEAP)", "RKD"]
    assert all(x["adaptation_params"] == 0 for x in r["losses"])  # neither adds a module
    [rkd] = r["vs_arkd"]
    assert rkd["arm"] == "RKD" and rkd["seeds"] == list(SEEDS)
    assert rkd["d_budget"] == pytest.approx(rkd["mAP_budget"] - r["reference"]["mAP_budget"])
    assert rkd["d_uncompressed"] == pytest.approx(rkd["mAP_uncompressed"] - r["reference"]["mAP_uncompressed"])
    assert rkd["d_budget_low"] <= rkd["d_budget"] <= rkd["d_budget_high"]
    assert rkd["verdict_uncompressed"] == "one seed" and 0 < rkd["own_macs_kept"] <= 1.0
    assert [p["seed"] for p in r["per_seed"]["RKD"]["budget"]] == list(SEEDS)
    log = (study["runs"] / "quick" / "deap-relationrkd-s1" / "train_log.csv").read_text().splitlines()[0]
    assert "loss_rkd" in log and "loss_arkd" not in log


def test_tables_figures_and_readme(study):
    res = study["results"]
    tables = sorted(p.stem for p in (res / "tables").glob("*.csv"))
    assert tables == sorted(p.stem for p in (res / "tables").glob("*.md"))
    assert {"00_1_dataset_stats", "01_1_teacher_student", "02_1_dilemma_table", "03_1_deap_forms",
            "04_1_main_table", "04_3_three_forms", "04_5_latency", "02_5_seeds", "02_6_verdicts_over_seeds",
            "02_9_lambda_choice", "02_11_at_deap_budget", "02_12_deap_vs_each_at_budget",
            "05_1_cdd_vs_deap", "05_2_cdd_vs_deap_seeds", "05_4_cdd_reset_share", "06_1_resolution_points",
            "06_3_crkd_vs_lr_baselines", "06_4_crkd_vs_lr_baselines_seeds", "06_6_cross_resolution",
            "07_1_budget_sweep", "07_2_structure_vs_baselines", "07_8_wall_time"} <= set(tables)
    figures = {p.stem for p in (res / "figures").glob("*.png")}
    assert {"00_2_identity_grid", "01_2_training_curves", "02_2_dilemma_map", "02_3_dilemma_curves",
            "03_2_deap_losses", "03_3_pruner_norms", "04_2_pareto", "04_4_kept_channels", "02_7_seeds_map",
            "05_3_cdd_masks", "06_2_resolution_pareto", "07_3_budget_pareto", "07_4_learned_widths"} <= figures
    main = pd.read_csv(res / "tables" / "04_1_main_table.csv")
    assert set(main["seed"]) == {0}  # the main table is seed 0's; the other seeds are in 02_5
    summary = (res / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("run,method,preset") and len(summary) > 10
    assert R.render_results_page(res, check=True) and R.render_headline(study["readme"], res, check=True)
    text = (res / "README.md").read_text()
    for stem in figures:
        assert f"(figures/{stem}.png)" in text  # linked from the results page's folder
    assert "preset `quick`" in text and "| teacher-s0 | teacher |" in text
    head = study["readme"].read_text()
    assert "| this study: DEAP, absorbed (lambda 0.05, threshold cut) |" in head
    assert "| this study: naive KD + slimming (kd_slim), absorbed |" in head and "Over seeds 0, 1" in head and "(runs/quick/results/README.md)" in head
    assert not list(study["root"].rglob("*.tmp")) and not list(res.rglob("*.failed.ipynb"))


def test_reproduce_again_reuses_everything(study):
    t0 = time.time()
    again = reproduce(**study["kw"])
    assert [r["executed"] for r in again] == [False] * len(NOTEBOOKS)
    assert time.time() - t0 < 30
    assert R.render_results_page(study["results"], check=True)
    assert R.render_headline(study["readme"], study["results"], check=True)


@pytest.mark.slow
def test_03_full_ablation(study):
    """``full=True``: DEAP's loss-term ablations and the sparsity arms over two seeds at each seed's learned budget,
    every arm's budget cut derived from its own run (no second training)."""
    out = study["root"] / "results_full"
    report = reproduce(**{**study["kw"], "out": str(out), "full": True, "notebooks": ["03_deap"], "readme": None,
                          "parameters": {"seeds": list(SEEDS)}})
    assert [r["name"] for r in report] == ["03_deap"]
    rec = R.load_record(out, "03_deap")
    assert rec["seeds"] == list(SEEDS)
    abl = {r["arm"]: r for r in rec["ablation"]}
    assert set(abl) == {"no KL", "no DL", "no ARKD representation (alpha = 0)", "no ARKD relation (beta = 0)",
                        "no lasso (lambda = 0)"}
    assert {r["arm"] for r in rec["sparsity"]} == {"lasso on the BN gates (kd_np_direct)",
                                                   "lasso on the 3x3 filters (kd_np_filters)"}
    for r in rec["ablation"] + rec["sparsity"]:
        assert r["seeds"] == list(SEEDS) and _pct(r["mAP"]) and _pct(r["reference_mAP"])
        assert r["d_mean"] == pytest.approx(r["mAP"] - r["reference_mAP"])  # the mean of the paired differences
        assert r["ci_low"] <= r["d_mean"] <= r["ci_high"] and r["verdict"] in ("equivalent", "better", "worse",
                                                                                "inconclusive")
        assert 0.0 < r["own_macs_kept"] <= 1.0
    runs = study["runs"] / "quick"
    names = {p.name for p in runs.iterdir()}
    assert {"deap-kl_weight0.0-s0", "deap-lasso10.0_lasso20.0-s1", "kd_np_filters-s0", "kd_np_direct-s1"} <= names
    cut = [n for n in names if n.startswith("deap-arkd_beta0.0_bn_recalib") and n.endswith("-s1")]
    assert len(cut) == 1
    metrics = json.loads((runs / cut[0] / "metrics.json").read_text())
    assert metrics["cut_of"].endswith("deap-arkd_beta0.0-s1")  # derived from the arm's own run
    assert {"03_4_deap_ablation", "03_6_pcp_vs_weight_sparsity"} <= {p.stem for p in (out / "tables").glob("*.csv")}
    assert {"03_5_deap_ablation_map", "03_7_pcp_vs_weight_sparsity"} <= {p.stem for p in (out / "figures").glob("*.png")}


def test_make_lab_serves_the_notebooks(tmp_path):
    """``make lab`` starts JupyterLab at the repository root with the project kernel as default (as root too):
    the notebooks and the executed ones are reachable, and a paired ``.py`` opens as a notebook (jupytext)."""
    import os
    import signal
    import socket
    import subprocess
    import urllib.request

    if not (REPO / ".venv" / "bin" / "jupyter").is_file() or Path(sys.executable).parent != REPO / ".venv" / "bin":
        pytest.skip("make lab runs the project's .venv; this suite runs another interpreter")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "deap-lab-test"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg")}
    proc = subprocess.Popen(["make", "-s", "-C", str(REPO), "lab",
                             f"LAB_ARGS=--no-browser --ip=127.0.0.1 --port={port} --ServerApp.token={token}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        deadline, names, specs = time.time() + 60, None, None
        while time.time() < deadline and names is None:
            if proc.poll() is not None:
                pytest.fail(f"make lab exited with status {proc.returncode}")
            try:
                api = f"http://127.0.0.1:{port}/api"
                with urllib.request.urlopen(f"{api}/contents/notebooks?token={token}", timeout=2) as r:
                    names = {c["name"] for c in json.load(r)["content"]}
                with urllib.request.urlopen(f"{api}/kernelspecs?token={token}", timeout=2) as r:
                    ks = json.load(r)
                    specs, default = set(ks["kernelspecs"]), ks["default"]
                with urllib.request.urlopen(f"{api}/contents/results?token={token}", timeout=2) as r:
                    top = {c["name"] for c in json.load(r)["content"]}
                with urllib.request.urlopen(f"{api}/contents/notebooks/00_data.py?type=notebook&token={token}",
                                            timeout=5) as r:
                    as_nb = json.load(r)
            except OSError:
                time.sleep(0.5)
        assert names is not None, "JupyterLab did not answer within 60 s"
        assert {f"{n}.ipynb" for n in NOTEBOOKS} | {f"{n}.py" for n in NOTEBOOKS} <= names
        assert "deap-study" in specs and default == "deap-study"
        assert "executed" in top
        assert as_nb["type"] == "notebook" and as_nb["content"]["cells"]  # the .py is served as a notebook
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_saving_a_notebook_in_jupyterlab_updates_its_paired_py(tmp_path):
    """JupyterLab saves through jupytext's contents manager: saving the .ipynb rewrites the paired .py."""
    import shutil

    import jupytext
    from jupytext.sync_contentsmanager import TextFileContentsManager

    shutil.copy(REPO / "jupytext.toml", tmp_path / "jupytext.toml")
    (tmp_path / "notebooks").mkdir()
    for ext in ("ipynb", "py"):
        shutil.copy(notebook_dir() / f"00_data.{ext}", tmp_path / "notebooks" / f"00_data.{ext}")
    cm = TextFileContentsManager(root_dir=str(tmp_path))
    model = cm.get("notebooks/00_data.ipynb")
    model["content"].cells.append(nbformat.v4.new_markdown_cell("An edit made in JupyterLab."))
    cm.save(model, "notebooks/00_data.ipynb")
    py = jupytext.read(tmp_path / "notebooks" / "00_data.py")
    assert py.cells[-1].source == "An edit made in JupyterLab."
    nb = nbformat.read(tmp_path / "notebooks" / "00_data.ipynb", as_version=4)
    assert [c.source for c in nb.cells] == [c.source for c in py.cells]



def test_a_core_request_reuses_a_full_execution_never_the_reverse():
    from deap_lib.reproduce import _covers

    full = {"parameters": {"preset": "cpu", "seed": 0, "full": True}, "notebook_sha256": "a"}
    core = {"parameters": {"preset": "cpu", "seed": 0, "full": False}, "notebook_sha256": "a"}
    assert _covers(full, core) and _covers(core, core) and not _covers(core, full)
    assert not _covers(full, {**core, "notebook_sha256": "b"})
    assert not _covers(full, {**core, "parameters": {**core["parameters"], "seed": 1}})


def test_every_figure_reads_at_a_glance(study):
    """Every series of every figure is named in a legend (or by category ticks), every axis labelled."""
    bad, seen = {}, 0
    for meta in sorted((study["results"] / "figures").glob("*.json")):
        rec = json.loads(meta.read_text())
        if "axes" in rec:  # matplotlib figures (images saved with save_image have none)
            seen += 1
            problems = R.figure_problems(rec["axes"])
            if problems:
                bad[meta.stem] = problems
    assert seen >= 15 and bad == {}
