"""End-to-end runs of every method on the quick preset (tiny synthetic data, 1 epoch each).

These check the wiring and the records, not accuracy: forms present, metrics finite and in range, the
absorbed model equal to the pruned one, the summary CSV rows, the reuse/force rules and the CLI.
"""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from deap_lib.__main__ import main
from deap_lib.config import RunConfig
from deap_lib.export import load_compact
from deap_lib.methods import METHODS, PRESETS, get_preset, run
from deap_lib.records import SUMMARY_COLUMNS

PRUNING_FORMS = {"unpruned", "pruned", "absorbed"}


@pytest.fixture(scope="module")
def quick_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data") / "synthetic_veri_quick")


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, quick_root):
    out = tmp_path_factory.mktemp("runs")
    cfg = get_preset("quick", "teacher", **{"data.root": quick_root})
    m = run(cfg, out / "teacher", summary_csv=out / "summary.csv", progress=False)
    return out, m


def _check_form(rec):
    for k in ("mAP", "rank1", "rank5", "rank10", "mINP", "mAP_low", "mAP_high"):
        assert math.isfinite(rec[k]) and 0.0 <= rec[k] <= 100.0, (k, rec[k])
    assert rec["mAP_low"] <= rec["mAP"] <= rec["mAP_high"]
    assert rec["params"] > rec["params_no_classifier"] > 0 and rec["macs"] > 0


def test_registries_list_the_methods_and_presets():
    assert {"pretrain", "teacher", "student", "kd", "np", "deap", "cdd", "crkd", "kd_np_direct", "kd_slim", "kd_then_np",
            "np_then_kd", "structure_kd", "thinned_kd"} <= set(METHODS.names())
    assert PRESETS.names() == ["cpu", "paper", "quick"]
    with pytest.raises(KeyError, match="unknown method 'deep'; valid names: cdd, crkd, deap, kd"):
        METHODS.get("deep")
    with pytest.raises(KeyError, match="unknown preset 'gpu'; valid names: cpu, paper, quick"):
        get_preset("gpu")
    # the cpu study's teacher trains the students' schedule (the paper's setting); the quick smoke preset's
    # is longer, so that its two-epoch students have something to learn from
    assert get_preset("cpu", "teacher").optim.epochs == get_preset("cpu", "kd_slim").optim.epochs == 40
    assert get_preset("quick", "teacher").optim.epochs > get_preset("quick", "student").optim.epochs
    assert get_preset("cpu", "teacher", **{"optim.epochs": 7}).optim.epochs == 7


def test_synthetic_dataset_names():
    from deap_lib.data import SyntheticConfig
    from deap_lib.data.synthetic import synthetic_config

    assert synthetic_config("default") == SyntheticConfig() == SyntheticConfig.at_difficulty(0.2)
    easy = synthetic_config("easy")
    assert easy == SyntheticConfig.at_difficulty(0.05) and easy != SyntheticConfig()
    assert synthetic_config("tiny").num_train_ids == 8
    assert get_preset("cpu").data.synthetic in ("default", "easy")
    with pytest.raises(KeyError, match="unknown synthetic dataset 'hard'; valid names: default, easy, easy_val, pretrain, tiny, "
                       "tiny_pretrain, tiny_val"):
        synthetic_config("hard")


def test_teacher_run_records(teacher_run):
    out, m = teacher_run
    assert set(m["forms"]) == {"teacher"}
    _check_form(m["forms"]["teacher"])
    assert m["config"]["method"] == "teacher" and m["seed"] == 0 and m["code_version"]
    on_disk = json.loads((out / "teacher" / "metrics.json").read_text())
    assert on_disk["forms"]["teacher"]["mAP"] == m["forms"]["teacher"]["mAP"]
    df = pd.read_csv(out / "summary.csv")
    assert list(df.columns) == SUMMARY_COLUMNS and df["form"].tolist() == ["teacher"]
    model = load_compact(str(out / "teacher" / "model.pt"))
    assert model.config["pcp"] is None


@pytest.mark.parametrize("method", ["deap", "kd_np_direct", "kd_slim", "np_then_kd", "kd_then_np"])
def test_pruning_methods_record_three_exact_forms(teacher_run, quick_root, method):
    out, _ = teacher_run
    overrides = {"data.root": quick_root, "teacher_path": str(out / "teacher" / "model.pt"),
                 "prune.target_macs": 0.6}
    if method == "kd_then_np":  # stages of half the schedule: 2 + 2 of 4 epochs
        overrides.update({"optim.stage_frac": 0.5, "optim.epochs": 4})
    m = run(get_preset("quick", method, **overrides), out / method, summary_csv=out / "summary.csv",
            progress=False)
    assert PRUNING_FORMS <= set(m["forms"])
    for form in PRUNING_FORMS:
        _check_form(m["forms"][form])
    f = m["forms"]
    # exactness of the re-parameterisation is checked in float64; in fp32 a channel whose re-calibrated BN
    # variance is ~0 (degenerate 2-epoch quick models) amplifies rounding, which can flip near-tied ranks
    # among the 14 quick queries, so the fp32 mAPs are only required to be close here
    assert m["absorb_verification"]["max_rel"] < 1e-6 and "fp32_max_rel" in m["absorb_verification"]
    assert f["absorbed"]["mAP"] == pytest.approx(f["pruned"]["mAP"], abs=10.0)
    assert f["absorbed"]["macs"] <= 0.6 * f["unpruned"]["macs"] + 1
    assert f["absorbed"]["params_no_classifier"] < f["unpruned"]["params_no_classifier"]
    assert m["teacher_hash"] and len(m["teacher_hash"]) == 64
    if method == "kd_then_np":
        for stage in ("stage1_kd", "stage2_np"):
            assert pd.read_csv(out / method / stage / "train_log.csv")["epoch"].tolist() == [1, 2]
    pq = np.load(out / method / "per_query_absorbed.npz")
    assert set(pq.files) == {"ap", "inp", "first_hit", "valid", "q_pids"}
    df = pd.read_csv(out / "summary.csv")
    assert m["run"].endswith("/" + method) and set(df[df.run == m["run"]].form) == PRUNING_FORMS


@pytest.mark.parametrize("method", ["deap", "kd_np_direct"])
def test_gradual_pruning_reaches_the_budget_during_training(teacher_run, quick_root, method):
    out, _ = teacher_run
    cfg = get_preset("quick", method, **{"data.root": quick_root, "teacher_path": str(out / "teacher" / "model.pt"),
                                         "optim.epochs": 3, "prune.target_macs": 0.6, "prune.schedule": "gradual",
                                         "prune.allocation": "uniform", "prune.gradual_end_frac": 0.5})
    m = run(cfg, out / f"gradual_{method}", progress=False)
    f = m["forms"]
    # the budget was reached by the zeroed groups during training: the final cut changes nothing
    assert f["pruned_no_recalib"]["mAP"] == f["unpruned"]["mAP"]
    assert f["absorbed"]["macs"] <= 0.6 * f["unpruned"]["macs"] + 1
    log = pd.read_csv(out / f"gradual_{method}" / "train_log.csv")
    assert log["prune_macs_frac"].is_monotonic_decreasing and log["prune_macs_frac"].iloc[-1] <= 0.6
    assert m["prune_rule"]["allocation"] == "uniform"
    with pytest.raises(ValueError, match="needs prune.target_macs"):
        run(cfg.copy(**{"prune.target_macs": None}), out / f"gradual_{method}_bad", progress=False)


def test_finished_run_is_reused_and_a_different_config_refused(teacher_run, quick_root):
    out, m = teacher_run
    cfg = get_preset("quick", "teacher", **{"data.root": quick_root})
    again = run(cfg, out / "teacher", progress=False)
    assert again["wall_time_s"] == m["wall_time_s"]  # read back, not re-trained
    with pytest.raises(FileExistsError, match="optim.lr"):
        run(cfg.copy(**{"optim.lr": 0.2}), out / "teacher", progress=False)
    forced = run(cfg, out / "teacher_copy", progress=False)
    again = run(cfg, out / "teacher_copy", progress=False, force=True)  # re-trains over the old checkpoint
    assert again["wall_time_s"] != forced["wall_time_s"]
    assert again["forms"]["teacher"]["mAP"] == forced["forms"]["teacher"]["mAP"]  # same seed, same result


def test_a_changed_args_default_makes_a_finished_run_stale(quick_root):
    import torch

    from deap_lib.methods.runner import finished_run_diff, resolve_runtime, resolved_args

    cfg = get_preset("quick", "structure_kd", **{"data.root": quick_root, "args.blockwise_frac": 0.5})
    rec = json.loads(json.dumps(resolved_args(cfg)))  # as metrics.json holds it
    rt = resolve_runtime(cfg, torch.device("cpu"))  # the runtime the run recorded (test_precision: stale runtimes)
    assert rec["structure_kd"]["blockwise_frac"] == 0.5 and rec["structure_kd"]["lambda_rate"] == 0.1
    assert finished_run_diff({"config": cfg.to_dict(), "resolved_args": rec, "runtime": rt}, cfg) == {}
    # the run trained when the default of lambda_rate was 0.2: stale now, though its saved config is equal
    old = {**rec, "structure_kd": {**rec["structure_kd"], "lambda_rate": 0.2}}
    assert finished_run_diff({"config": cfg.to_dict(), "resolved_args": old, "runtime": rt}, cfg) == {
        "resolved_args.structure_kd.lambda_rate": (0.2, 0.1)}
    # a run made before the args were recorded compares by its config alone
    assert finished_run_diff({"config": cfg.to_dict(), "runtime": rt}, cfg) == {}
    assert resolved_args(get_preset("quick", "teacher")) == {}  # a method without args


def test_distillation_without_teacher_is_a_clear_error(tmp_path, quick_root):
    cfg = get_preset("quick", "kd", **{"data.root": quick_root})
    with pytest.raises(ValueError, match="needs a teacher"):
        run(cfg, tmp_path / "kd", progress=False)


def test_cli_train_deap(teacher_run, quick_root, capsys):
    out, _ = teacher_run
    rc = main(["train", "--method", "deap", "--preset", "quick", "--data", quick_root, "--set", "data.synthetic=tiny",
               "--teacher", str(out / "teacher" / "model.pt"), "--out", str(out / "cli_deap"),
               "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "absorbed: mAP" in text and (out / "cli_deap" / "absorbed.pt").exists()
    deployed = load_compact(str(out / "cli_deap" / "absorbed.pt"))
    assert deployed.config["deploy"] is True


def test_paper_preset_builds_and_takes_one_deap_step_on_two_images():
    """The paper preset (ResNet-101, 256x256, docs/methods/deap.rst §Training recipe) on CPU: construction + one forward/backward."""
    from deap_lib.methods.runner import build_student
    from deap_lib.models import build_model

    cfg = get_preset("paper", "deap", student_init="random")
    assert (cfg.model.arch, cfg.model.input_size, cfg.optim.epochs, cfg.optim.lr) == ("resnet101", (256, 256), 90, 0.01)
    assert (cfg.data.ids_per_batch, cfg.data.num_instances, cfg.seed, cfg.amp) == (16, 6, 2021, True)
    torch.manual_seed(0)
    student = build_student(cfg, 576, "deap").train()
    teacher = build_model("resnet101", 576, last_stride=1).eval()
    method = METHODS.get("deap")(cfg, student, teacher)
    x, pids = torch.randn(2, 3, 256, 256), torch.tensor([0, 1])
    out_s = student(x)
    assert len(out_s.block_feats) == 33 and out_s.stage_maps[1].shape == (2, 2048, 16, 16)
    assert not teacher.training and method.training  # the frozen teacher stays in eval mode
    terms = method.forward_train((x, pids))
    assert set(terms) == {"ce", "triplet", "kl", "dl", "arkd", "lasso1", "lasso2"}
    total = sum(terms.values())
    total.backward()
    assert math.isfinite(float(total.detach()))
    g = next(student.pcp_blocks()).pruner1.weight.grad
    assert g is not None and torch.isfinite(g).all()


def test_lasso_warmup_ramps_lambda_linearly():
    from deap_lib.models import build_model

    cfg = get_preset("quick", "deap", **{"prune.lasso_warmup_frac": 0.5, "loss.lasso1": 0.2, "loss.lasso2": 0.1})
    student = build_model("resnet50", 4, width=0.0625, pcp="deap", embed_dim=8)
    teacher = build_model("resnet50", 4, width=0.0625, embed_dim=8)
    method = METHODS.get("deap")(cfg, student, teacher)
    l1, l2 = (float(v) for v in student.group_lasso(eps=cfg.loss.lasso_eps))
    for progress, k in ((0.0, 0.0), (0.25, 0.5), (0.5, 1.0), (0.9, 1.0)):
        method.progress = progress
        t = method.lasso_terms(student)
        assert float(t["lasso1"]) == pytest.approx(k * 0.2 * l1, rel=1e-6)
        assert float(t["lasso2"]) == pytest.approx(k * 0.1 * l2, rel=1e-6)
    paper = METHODS.get("deap")(get_preset("paper", "deap"), student, teacher)
    assert paper.lasso_scale() == 1.0  # the paper applies lambda from the first iteration


def test_cli_data_generates_the_presets_synthetic_set(tmp_path, capsys):
    from deap_lib.data.synthetic import synthetic_config

    root = tmp_path / "tiny"
    assert main(["data", "--preset", "quick", "--root", str(root)]) == 0
    meta = json.loads((root / "meta.json").read_text())
    assert meta["config"]["num_train_ids"] == synthetic_config("tiny").num_train_ids
    assert main(["data", "--preset", "quick", "--root", str(root)]) == 0  # complete copy: reused
    assert main(["data", "--preset", "paper"]) == 2
    assert "reads real data" in capsys.readouterr().err
    pre = tmp_path / "pre"  # a named set with its own generator stream (the pre-training corpus)
    assert main(["data", "--preset", "quick", "--name", "tiny_pretrain", "--root", str(pre)]) == 0
    meta_pre = json.loads((pre / "meta.json").read_text())
    assert meta_pre["seed"] == 1 and meta_pre["config"]["num_train_ids"] == 10


def test_code_version_ignores_study_outputs(tmp_path):
    """``-dirty`` marks uncommitted code, not the results a study run writes into the checkout."""
    import subprocess

    from deap_lib.records import code_version

    def git(*a):
        subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "deap_lib").mkdir()
    (tmp_path / "deap_lib" / "a.py").write_text("x = 1\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "summary.csv").write_text("run\n")
    (tmp_path / "README.md").write_text("# r\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    clean = code_version(tmp_path)
    assert clean and not clean.endswith("-dirty")
    (tmp_path / "results" / "summary.csv").write_text("run\nnew\n")
    (tmp_path / "README.md").write_text("# r\nregenerated\n")
    assert code_version(tmp_path) == clean
    (tmp_path / "deap_lib" / "b.py").write_text("y = 2\n")  # untracked code counts
    assert code_version(tmp_path) == clean + "-dirty"
    (tmp_path / "deap_lib" / "b.py").unlink()
    (tmp_path / "deap_lib" / "a.py").write_text("x = 2\n")
    assert code_version(tmp_path) == clean + "-dirty"
    assert code_version(tmp_path / "nowhere") != clean  # not a checkout: the package version


def test_cli_user_errors_say_how_to_fix_them_and_exit_2(teacher_run, quick_root, tmp_path, capsys):
    """Unknown method / key, a missing teacher, a teacher trained on another set: ``error: ...`` with the fix,
    status 2, no traceback, nothing trained."""
    from deap_lib.export import save_compact
    from deap_lib.models import build_model

    base = ["train", "--preset", "quick", "--data", quick_root, "--set", "data.synthetic=tiny", "--no-progress"]
    assert main([*base, "--method", "deep", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown method 'deep'; valid names: cdd, crkd, deap, kd") and "Traceback" not in err
    assert main([*base, "--method", "kd", "--set", "optim.lrr=0.1", "--out", str(tmp_path / "b")]) == 2
    assert "unknown config key 'optim.lrr'; valid keys here:" in capsys.readouterr().err
    assert main([*base, "--method", "deap", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "needs a teacher" in err and "python -m deap_lib train --method teacher --preset quick" in err
    other = tmp_path / "other_teacher.pt"  # a teacher of another dataset: 180 identities
    save_compact(build_model("resnet50", 180, width=0.0625, embed_dim=16), str(other))
    assert main([*base, "--method", "deap", "--teacher", str(other), "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "classifies 180 identities, the run's training set has 8" in err and "Train a matching one" in err
    assert not (tmp_path / "d" / "last.pt").exists()  # refused before any training
    assert main([*base, "--method", "deap", "--teacher", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "e")]) == 2
    assert "nope.pt not found" in capsys.readouterr().err
