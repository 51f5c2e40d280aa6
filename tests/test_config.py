import pytest

from deap_lib.config import RunConfig, apply_overrides, config_from_dict, parse_set_args
from deap_lib.config import config_diff


def test_round_trip_and_overrides():
    cfg = RunConfig()
    apply_overrides(cfg, parse_set_args(["optim.lr=0.05", "model.input_size=(128, 64)", "prune.relative=True",
                                         "seed=3", "data.re_fill=imagenet_mean_quirk", "prune.target_macs=0.3"]))
    assert cfg.optim.lr == 0.05 and cfg.model.input_size == (128, 64) and cfg.prune.relative is True
    assert cfg.seed == 3 and cfg.data.re_fill == "imagenet_mean_quirk" and cfg.prune.target_macs == 0.3
    again = config_from_dict(cfg.to_dict())
    assert again == cfg
    assert sorted(config_diff(cfg.to_dict(), RunConfig().to_dict())) == [
        "data.re_fill", "model.input_size", "optim.lr", "prune.relative", "prune.target_macs", "seed"]


def test_int_given_for_float_is_accepted():
    cfg = RunConfig().copy(**{"optim.lr": 1})
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)


@pytest.mark.parametrize("key,msg", [
    ("optim.lrr", r"unknown config key 'optim.lrr'; valid keys here: .*lr"),
    ("optimizer.lr", r"unknown config key 'optimizer'"),
    ("seed.x", r"'seed' is not a section"),
])
def test_unknown_keys_are_named(key, msg):
    with pytest.raises(KeyError, match=msg):
        apply_overrides(RunConfig(), {key: "1"})


def test_wrong_types_are_named():
    with pytest.raises(ValueError, match="config key 'optim.epochs': cannot parse 'ten' as int"):
        apply_overrides(RunConfig(), {"optim.epochs": "ten"})
    with pytest.raises(ValueError, match="config key 'prune.relative': expected a bool"):
        apply_overrides(RunConfig(), {"prune.relative": "1"})
    with pytest.raises(ValueError, match="is a section"):
        apply_overrides(RunConfig(), {"optim": 3})
    with pytest.raises(ValueError, match="section.key=value"):
        parse_set_args(["lr"])


def test_a_key_added_after_a_run_counts_only_away_from_its_default():
    from deap_lib.config import RunConfig, run_config_diff

    cur = RunConfig()
    saved = cur.to_dict()
    del saved["prune"]["round_widths"]  # a run made before the option existed
    assert run_config_diff(saved, cur) == {}
    changed = cur.copy(**{"prune.round_widths": True})
    assert run_config_diff(saved, changed) == {"prune.round_widths": ("<missing>", True)}
    assert run_config_diff(saved, cur.copy(**{"optim.lr": 0.5})) == {"optim.lr": (0.01, 0.5)}


def test_notebook_parameters_from_the_command_line():
    """``--param`` values: Python literals, and the shell's true / false / none (else ``ablations=false``
    would reach the notebook as the truthy string "false")."""
    from deap_lib.__main__ import _notebook_params

    assert _notebook_params(["ablations=false", "full=True", "x=None", "seeds=[0, 1]", "name=cpu", "t=0.5"]) == {
        "ablations": False, "full": True, "x": None, "seeds": [0, 1], "name": "cpu", "t": 0.5}
    assert _notebook_params(["a=FALSE", "b=true"]) == {"a": False, "b": True}
    with pytest.raises(SystemExit, match="must look like name=value"):
        _notebook_params(["oops"])
