"""Another cut of a trained run (deap_lib.methods.recut): starting after the finished run's last epoch and only
cutting gives, tensor for tensor, what training the new cut from scratch gives; anything that would train
differently is refused with the key named."""
import json

import pandas as pd
import pytest
import torch

from deap_lib.__main__ import main
from deap_lib.methods import UserError, get_preset, run
from deap_lib.methods.recut import cut_only_difference

CUT = {"prune.target_macs": 0.6, "prune.bn_recalib_batches": 1}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data") / "synthetic_veri_quick")
    out = tmp_path_factory.mktemp("runs")
    run(get_preset("quick", "teacher", **{"data.root": root, "optim.epochs": 2}), out / "teacher", progress=False)
    return root, out


def _cfg(setup, method, **ov):
    root, out = setup
    return get_preset("quick", method, **{"data.root": root, "teacher_path": str(out / "teacher" / "model.pt"), **ov})


def _tensors(path):
    obj = torch.load(path, map_location="cpu", weights_only=False)
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else obj.state_dict()
    return {k: v for k, v in sd.items() if torch.is_tensor(v)}


@pytest.mark.parametrize("method", ["deap", "kd_slim"])
def test_a_cut_of_a_trained_run_equals_training_that_cut(setup, method):
    _, out = setup
    base = run(_cfg(setup, method), out / f"{method}_threshold", progress=False)  # cut by its own threshold
    cut = run(_cfg(setup, method, **CUT), out / f"{method}_cut", progress=False, cut_of=out / f"{method}_threshold")
    full = run(_cfg(setup, method, **CUT), out / f"{method}_trained", progress=False)  # the same, trained
    assert cut["cut_of"] == base["run"] and "cut_of" not in full
    assert cut["wall_time_s"] == pytest.approx(base["wall_time_s"] + cut["cut_wall_time_s"])
    assert cut["config"] == full["config"]
    assert set(cut["forms"]) == set(full["forms"]) >= {"unpruned", "pruned", "absorbed"}
    for form, f in full["forms"].items():
        for k in ("mAP", "rank1", "mINP", "macs", "params"):
            assert cut["forms"][form][k] == f[k], (form, k)
    for name in ("model.pt", "absorbed.pt"):
        a, b = _tensors(out / f"{method}_cut" / name), _tensors(out / f"{method}_trained" / name)
        assert a.keys() == b.keys() and len(a) > 20
        assert all(torch.equal(a[k], b[k]) for k in a), name
    # the new cut really is another: fewer MACs than the threshold cut kept, and the log is the base's
    assert cut["forms"]["absorbed"]["macs"] < base["forms"]["absorbed"]["macs"] or \
        base["forms"]["absorbed"]["macs"] <= 0.6 * base["forms"]["unpruned"]["macs"]
    logs = [pd.read_csv(out / f"{method}_{w}" / "train_log.csv").drop(columns=["seconds", "images_per_s"])
            for w in ("cut", "trained")]
    pd.testing.assert_frame_equal(*logs)  # the same training, timings aside
    # reused when asked again (no new cut)
    again = run(_cfg(setup, method, **CUT), out / f"{method}_cut", progress=False, cut_of=out / f"{method}_threshold")
    assert again["cut_wall_time_s"] == cut["cut_wall_time_s"]


def test_only_the_cut_may_differ():
    deap = get_preset("quick", "deap").to_dict()
    assert cut_only_difference("deap", deap, get_preset("quick", "deap", **CUT).to_dict()).keys() == set(CUT)
    assert cut_only_difference("deap", deap, get_preset("quick", "deap", **{"optim.lr": 0.1}).to_dict()) is None
    gradual = get_preset("quick", "deap", **{**CUT, "prune.schedule": "gradual"}).to_dict()
    assert cut_only_difference("deap", deap, gradual) is None  # gradual pruning acts during training
    assert cut_only_difference("kd", get_preset("quick", "kd").to_dict(), get_preset("quick", "kd").to_dict()) is None
    older = get_preset("quick", "deap").to_dict()
    del older["loss"]["relation"]  # a run saved before the key existed trained at its default
    assert cut_only_difference("deap", older, get_preset("quick", "deap", **CUT).to_dict()).keys() == set(CUT)
    assert cut_only_difference("deap", older, get_preset("quick", "deap", **{**CUT, "loss.relation": "at"}).to_dict()) is None


def test_a_cut_of_a_run_that_trains_differently_is_refused(setup, capsys):
    root, out = setup
    run(_cfg(setup, "deap"), out / "deap_base", progress=False)
    with pytest.raises(UserError, match=r"differing keys besides the cut: optim\.lr"):
        run(_cfg(setup, "deap", **{**CUT, "optim.lr": 0.02}), out / "deap_lr", progress=False, cut_of=out / "deap_base")
    with pytest.raises(UserError, match="not a finished run"):
        run(_cfg(setup, "deap", **CUT), out / "deap_x", progress=False, cut_of=out / "missing")
    assert not (out / "deap_lr").exists() and not (out / "deap_x").exists()  # nothing left behind
    rc = main(["train", "--method", "kd_slim", "--preset", "quick", "--data", root, "--set", "data.synthetic=tiny",
               "--teacher", str(out / "teacher" / "model.pt"), "--out", str(out / "slim_from_deap"),
               "--cut-of", str(out / "deap_base"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: --cut-of") and "method 'deap'" in err and "Traceback" not in err
    metrics = json.loads((out / "deap_base" / "metrics.json").read_text())
    assert "cut_of" not in metrics


def test_a_study_derives_a_cut_from_the_run_that_trains_the_same(tmp_path):
    from deap_lib.study import Study

    s = Study("quick", data_root=tmp_path / "d", runs_dir=tmp_path / "runs", results_dir=tmp_path / "res",
              epochs=2, device="cpu", verbose=False, jobs=1)
    spec = s.spec("deap", 0, CUT)
    assert s.cut_base(spec) == s.spec("deap", 0)
    assert s.cut_base(s.spec("deap", 0, {**CUT, "optim.lr": 0.02})) == s.spec("deap", 0, {"optim.lr": 0.02})
    assert s.cut_base(s.spec("deap", 0, {**CUT, "prune.schedule": "gradual"})) is None  # it prunes while training
    assert s.cut_base(s.spec("deap", 0, CUT, tag="mine")) is None  # a folder named by hand
    assert s.cut_base(s.spec("thinned_kd", 0, CUT)) is None  # its budget shapes the network it trains
    cut = s.run_many([("deap", 0, CUT)])[0]
    base = s.run_dir("deap", 0)
    assert (base / "metrics.json").is_file() and cut["cut_of"] == json.loads((base / "metrics.json").read_text())["run"]
    assert "--cut-of" in (tmp_path / "runs" / "quick" / spec.name / "run.log").read_text()
    assert cut["forms"]["absorbed"]["macs"] <= 0.61 * cut["forms"]["unpruned"]["macs"]
