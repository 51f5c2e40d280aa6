"""Compact structure learning by KD (``structure_kd``, docs/methods/structure.rst) and its baseline ``thinned_kd``: per-channel
costs against thop, the budget cut against the gated network, the block-wise phase, the proximal penalty, the
clear errors, and quick runs through the CLI (ResNet with a parameter budget, MobileNetV2 with a MACs budget)
including a SIGKILL + ``--resume`` that ends bit-exactly where an uninterrupted run ends.

This file is also the plugin of its kill test: ``structure_kd_killable`` SIGKILLs itself at the end of the
epoch named by an environment variable (before that epoch's checkpoint)."""
from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from deap_lib.absorb import prune
from deap_lib.budget import (ChannelCosts, alive_widths, budget_masks, check_budget, deploy_cost, deploy_net,
                             prunable_widths, uniform_widths)
from deap_lib.losses.sparsity import gate_soft_threshold_
from deap_lib.methods import METHODS, get_preset
from deap_lib.methods.base import UserError
from deap_lib.methods.structure import StructureKD
from deap_lib.models import build_model
from deap_lib.models.gates import group_norms
from deap_lib.pruning import apply_masks

HERE = str(Path(__file__).resolve())
DIE_AT_ENV = "STRUCTURE_DIE_AT_EPOCH"
SIZE = (3, 32, 32)


class KillableStructureKD(StructureKD):
    name = "structure_kd_killable"

    def end_epoch(self, epoch):
        if os.environ.get(DIE_AT_ENV) == str(epoch):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().end_epoch(epoch)


if __name__.startswith("deap_plugin_"):
    METHODS.register("structure_kd_killable", KillableStructureKD)

NETS = [("resnet50", 0.125), ("resnet18", 0.125), ("mobilenet_v2", 0.25)]


def _net(arch, width, seed=0):
    """A plain network with distinct random BN gates and running statistics (so the cut has something to
    rank and BN is no identity)."""
    torch.manual_seed(seed)
    net = build_model(arch, 7, width=width, embed_dim=16)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(0.2 + torch.rand(m.weight.shape, generator=g))
                m.bias.normal_(0, 0.1, generator=g)
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return net


# ------------------------------------------------------------------------------------------- channel costs
@pytest.mark.parametrize("arch,width", NETS)
@pytest.mark.parametrize("kind", ["macs", "params"])
def test_channel_cost_is_thops_difference_when_one_channel_is_removed(arch, width, kind):
    """c_l of a prunable width = cost(network) - cost(network with that width one smaller), both counted by
    thop on freshly built deploy networks; and total(widths) equals thop at random widths."""
    net = _net(arch, width)
    costs = ChannelCosts(net, SIZE, kind)
    full = costs.full_widths
    assert costs.total(full) == deploy_cost(deploy_net(net), SIZE, kind) == costs.full
    g = torch.Generator().manual_seed(5)
    widths = [list(w) for w in full]
    for b, idx in enumerate(prunable_widths(net)):
        for i in idx:
            widths[b][i] = int(torch.randint(1, full[b][i] + 1, (1,), generator=g))
    base = deploy_cost(deploy_net(net, widths), SIZE, kind)
    assert costs.total(widths) == base
    marg = costs.marginal(widths)
    checked = 0
    for b, idx in enumerate(prunable_widths(net)):
        if b % 3:  # every third block: each is an independent thop count
            continue
        for i in idx:
            if widths[b][i] < 2:
                continue
            smaller = [list(w) for w in widths]
            smaller[b][i] -= 1
            assert base - deploy_cost(deploy_net(net, smaller), SIZE, kind) == marg[b][i], (b, i)
            checked += 1
    assert checked >= 3


def test_mobilenet_expansion_one_block_has_no_prunable_width():
    net = _net("mobilenet_v2", 0.25)
    assert prunable_widths(net)[0] == () and all(p == (0,) for p in prunable_widths(net)[1:])


# ------------------------------------------------------------------------------------------- the budget cut
@pytest.mark.parametrize("arch,width", NETS)
@pytest.mark.parametrize("kind,budget", [("macs", 0.5), ("params", 0.7), ("macs", 0.42)])
def test_budget_cut_meets_the_budget_within_one_percent_and_equals_the_gated_network(arch, width, kind, budget):
    net = _net(arch, width).double().eval()
    costs = ChannelCosts(net, SIZE, kind)
    prunable = prunable_widths(net)
    if budget < costs.floor(prunable):
        pytest.skip(f"{arch}: {kind} floor {costs.floor(prunable):.3f} above {budget}")
    scores = [tuple(group_norms(g.parts).detach() for g in blk.gates()) for _, blk in net.named_blocks()]
    masks, achieved = budget_masks(scores, costs, budget, prunable)
    cut = prune(net, masks=masks).eval()
    real = deploy_cost(deploy_net(cut), SIZE, kind) / costs.full
    assert real == pytest.approx(achieved, rel=1e-12)
    assert budget - 0.01 <= achieved <= budget
    # the highest-scoring channels are the ones kept: within a gate, every kept score >= every dropped one
    for pair, mpair in zip(scores, masks):
        for s, m in zip(pair, mpair):
            if (~m).any():
                assert s[m].min() >= s[~m].max()
    reference = apply_masks(net, masks).eval()  # the gated network, dropped groups zeroed
    x = torch.randn(2, *SIZE, dtype=torch.float64)
    with torch.no_grad():
        ref = reference(x)
        assert (cut(x) - ref).abs().max().item() <= 1e-10 * ref.abs().max().item()


def test_budget_prefix_fills_the_budget_by_score_on_a_hand_computed_case():
    """Two gates of a resnet18 at width 1/16 (4 and 8 channels in the first and the last stage): with every
    other gate scored high, the selection drops the lowest scores first and stops at the budget."""
    net = _net("resnet18", 0.0625)
    costs = ChannelCosts(net, SIZE, "macs")
    prunable = prunable_widths(net)
    scores = [tuple(torch.full((net.block_widths()[b][i],), 10.0) for i in idx) for b, idx in enumerate(prunable)]
    scores[0] = (torch.tensor([4.0, 1.0, 3.0, 2.0]),)
    masks, frac = budget_masks(scores, costs, 0.999999, prunable)
    # the budget just below 1 drops exactly one channel: the cheapest way is not asked, the lowest score is
    assert masks[0][0].tolist() == [True, False, True, True]
    assert all(m.all() for pair in masks[1:] for m in pair)
    w = [list(x) for x in costs.full_widths]
    w[0][0] -= 1
    assert frac == costs.fraction(w)


# ------------------------------------------------------------------------------------------- thinned network
def test_uniform_widths_use_the_largest_multiplier_within_the_budget():
    net = _net("resnet50", 0.125)
    costs, prunable = ChannelCosts(net, SIZE, "macs"), prunable_widths(net)
    widths, frac = uniform_widths(costs, 0.4, prunable)
    assert frac <= 0.4 and frac == costs.fraction(widths)
    full = costs.full_widths

    def at(m):  # the definition, computed directly: every prunable width max(1, round(m * n))
        w = [list(x) for x in full]
        for b, idx in enumerate(prunable):
            for i in idx:
                w[b][i] = max(1, int(round(m * full[b][i])))
        return w

    # a grid search over the multiplier finds no structure of this family closer to the budget
    best = max(f for f in (costs.fraction(at(k / 2000)) for k in range(2001)) if f <= 0.4)
    assert frac == pytest.approx(best, abs=1e-12)


# ------------------------------------------------------------------------------------------- the penalty
def test_gate_soft_threshold_is_the_group_proximal_step():
    gamma = torch.tensor([3.0, 0.3, 0.0])
    beta = torch.tensor([4.0, 0.4, 0.0])
    norms = gate_soft_threshold_([(gamma, 0), (beta, 0)], 1.0)
    assert torch.allclose(norms, torch.tensor([5.0, 0.5, 0.0]))
    # (3, 4) has norm 5: scaled by 1 - 1/5; (0.3, 0.4) has norm 0.5 < 1: zero; zero stays zero
    assert torch.allclose(gamma, torch.tensor([2.4, 0.0, 0.0])) and torch.allclose(beta, torch.tensor([3.2, 0.0, 0.0]))
    with pytest.raises(ValueError, match="tau must be >= 0"):
        gate_soft_threshold_([(gamma, 0)], -1.0)


# ------------------------------------------------------------------------------------------- the method
def _method(**args):
    cfg = get_preset("quick", "structure_kd", **{"prune.target_macs": 0.5, **{f"args.{k}": v for k, v in args.items()}})
    cfg.teacher_path = "unused"
    teacher = _net("resnet50", 0.0625, seed=3)
    student = build_model("resnet50", 7, width=0.0625, embed_dim=16)
    return StructureKD(cfg, student, teacher)


def _ctx(method, epoch, iteration=1, iters=4, epochs=8):
    trainer = SimpleNamespace(epochs=epochs, optimizer=method.configure_optimizers()[0].optimizer)
    return SimpleNamespace(epoch=epoch, epoch_index=epoch - 1, iteration=iteration, iters_per_epoch=iters,
                           trainer=trainer)


def test_stage_targets_split_the_budget_above_the_floors():
    m = _method()
    c = m.costs
    ungated = c.full - sum(c.block_cost(c.full_widths, g) for g in m.groups)
    assert sum(m.targets) + ungated == pytest.approx(0.5 * c.full, rel=1e-12)
    m2 = _method(stage_shares=[1.0, 1.0, 1.0, 5.0])
    spare = [t2 for t2 in m2.targets]
    assert spare[3] - spare[0] > 0 and sum(m2.targets) == pytest.approx(sum(m.targets), rel=1e-12)
    with pytest.raises(UserError, match="args.stage_shares must list 4 positive numbers"):
        _method(stage_shares=[1.0, 2.0])


def test_blockwise_phase_matches_the_teachers_stage_and_trains_only_that_stage():
    m = _method(blockwise_frac=0.5)
    m.train()
    m.teacher.eval()
    # epochs 1-4 of 8 are the block-wise phase: one stage per epoch
    for epoch, phase in ((1, 0), (2, 1), (4, 3), (5, None)):
        m.before_step(_ctx(m, epoch))
        assert m.phase == phase
    m.before_step(_ctx(m, 2))
    x = torch.randn(4, *SIZE)
    batch = (x, torch.arange(4) % 2)
    # started from the teacher's weights, in eval mode the stage reproduces the teacher's stage exactly
    m.eval()
    assert m.forward_train(batch)["blockwise"].item() == 0.0
    m.train()
    loss = m.forward_train(batch)["blockwise"]
    assert loss.item() > 0
    loss.backward()
    stage = set(m.groups[1])
    for b, (_, blk) in enumerate(m.net.named_blocks()):
        grads = [p.grad for p in blk.parameters()]
        if b in stage:
            assert all(g is not None and g.abs().sum() > 0 for g in grads), b
        else:
            assert all(g is None for g in grads), b
    assert all(p.grad is None for p in m.net.head.parameters()) and all(p.grad is None for p in m.teacher.parameters())
    ctx = _ctx(m, 2)
    before = {k: v.clone() for k, v in m.net.state_dict().items()}
    ctx.trainer.optimizer.step()
    m.after_step(ctx)
    names = [f"backbone.{n}." for n, _ in m.net.backbone.named_blocks()]
    for k, v in m.net.state_dict().items():
        if not any(k.startswith(names[b]) for b in stage):  # every other block, the stem and the head
            assert torch.equal(before[k], v), k
    assert any(not torch.equal(before[k], v) for k, v in m.net.state_dict().items())


def test_penalty_drives_the_alive_structure_to_its_target_and_stops_there():
    m = _method(blockwise_frac=0.0, lambda_rate=0.5)
    ctx = _ctx(m, 1)
    m.before_step(ctx)
    assert m.phase is None
    for _ in range(200):
        m.after_step(ctx)
        if m.costs.fraction(alive_widths(m.net)) <= 0.5:
            break
    alive = m.costs.fraction(alive_widths(m.net))
    assert alive <= 0.5
    # every gate keeps at least prune.min_channels (1) channel: no layer dies
    assert all(w >= 1 for ws in alive_widths(m.net) for w in ws)
    assert float(m.lam[-1]) > 1e-4 and all(float(v) == 1e-4 for v in m.lam[:-1])  # only the end-to-end weight grew
    lam = m.lam.clone()
    state = {k: v.clone() for k, v in m.net.state_dict().items()}
    m.after_step(ctx)  # at or below the target: no shrinkage, lambda unchanged
    assert torch.equal(m.lam, lam) and all(torch.equal(state[k], v) for k, v in m.net.state_dict().items())
    # a removed channel moved by the optimizer (momentum) is held at zero: the structure only shrinks
    gate, sl = m.blocks[0].gates()[0], m._slices[0][0]
    dead = torch.nonzero(m.dead[sl]).flatten()
    assert len(dead) > 0
    with torch.no_grad():
        gate.parts[0][0][dead[0]] = 0.7
    m.after_step(ctx)
    assert group_norms(gate.parts)[dead[0]] == 0 and m.costs.fraction(alive_widths(m.net)) == alive


def test_gate_soft_threshold_leaves_the_kept_channels_alone():
    gamma, beta = torch.tensor([0.1, 0.2, 3.0]), torch.tensor([0.0, 0.0, 4.0])
    gate_soft_threshold_([(gamma, 0), (beta, 0)], 1.0, keep=torch.tensor([False, True, False]))
    assert torch.allclose(gamma, torch.tensor([0.0, 0.2, 2.4])) and torch.allclose(beta, torch.tensor([0.0, 0.0, 3.2]))


def test_budget_errors_name_the_floor_or_the_valid_kinds():
    with pytest.raises(ValueError, match="below the architecture's floor 0.3000"):
        check_budget(0.1, 0.3, "macs")
    with pytest.raises(ValueError, match=r"outside \(0, 1\]"):
        check_budget(1.2, 0.3, "params")
    with pytest.raises(ValueError, match="valid: macs, params"):
        ChannelCosts(_net("resnet18", 0.0625), SIZE, "flops")
    with pytest.raises(UserError, match="below the architecture's floor"):
        StructureKD(get_preset("quick", "structure_kd", **{"prune.target_macs": 0.05}),
                    build_model("resnet50", 7, width=0.0625, embed_dim=16), _net("resnet50", 0.0625))
    with pytest.raises(UserError, match="needs a budget: prune.target_macs"):
        StructureKD(get_preset("quick", "structure_kd"), build_model("resnet50", 7, width=0.0625, embed_dim=16),
                    _net("resnet50", 0.0625))


# ------------------------------------------------------------------------------------------- CLI
def cli(*args, env=None, check=True):
    from cli_helpers import deap_cli  # (not at import: the CLI loads this file as a plugin)

    return deap_cli(HERE, *args, env=env, check=check)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from cli_helpers import quick_teacher

    return quick_teacher(HERE, tmp_path_factory.mktemp("structure"))


def _train(method, data, tpath, out, *extra, check=True, env=None):
    return cli("train", "--method", method, "--preset", "quick", "--data", data, "--set", "data.synthetic=tiny",
               "--teacher", tpath, "--out", str(out), "--no-progress", "--threads", "1", *extra, check=check, env=env)


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_structure_kd_meets_a_parameter_budget_and_resumes_bit_exactly_after_sigkill(teacher):
    root, data, tpath = teacher
    extra = ("--epochs", "3", "--set", "prune.budget_kind=params", "--set", "prune.target_macs=0.5",
             "--set", "args.blockwise_frac=0.34")
    ref, killed = root / "ref", root / "killed"
    _train("structure_kd", data, tpath, ref, *extra)
    m = json.loads((ref / "metrics.json").read_text())
    assert set(m["forms"]) == {"unpruned", "pruned_no_recalib", "pruned", "absorbed"} or \
        {"unpruned", "pruned", "absorbed"} <= set(m["forms"])
    frac = m["forms"]["absorbed"]["params_no_classifier"] / m["forms"]["unpruned"]["params_no_classifier"]
    assert 0.49 <= frac <= 0.5 and m["prune_rule"]["budget_kind"] == "params"
    assert m["prune_rule"]["achieved_fraction"] == pytest.approx(frac, rel=1e-9)
    assert m["absorb_verification"]["max_rel"] < 1e-6
    log = (ref / "train_log.csv").read_text().splitlines()
    assert "loss_blockwise" in log[0] and "alive_fraction" in log[0]
    # the defaults the run trained with are recorded beside the keys that were set
    assert m["resolved_args"]["structure_kd"] == {"blockwise_frac": 0.34, "stage_shares": None, "feature_weight": 1.0,
                                                  "lambda_init": 1e-4, "lambda_rate": 0.1, "init_from_teacher": True}

    p = _train("structure_kd_killable", data, tpath, killed, *extra, check=False, env={DIE_AT_ENV: "2"})
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr[-2000:])
    assert _load(killed / "last.pt")["epoch"] == 1
    _train("structure_kd_killable", data, tpath, killed, *extra, "--resume")
    a, b = _load(ref / "last.pt"), _load(killed / "last.pt")
    assert a["epoch"] == b["epoch"] == 3 and "lam" in a["model"] and set(a["model"]) == set(b["model"])
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    mb = json.loads((killed / "metrics.json").read_text())
    assert {f: v["mAP"] for f, v in m["forms"].items()} == {f: v["mAP"] for f, v in mb["forms"].items()}


def test_thinned_kd_is_the_uniform_structure_of_the_budget(teacher):
    root, data, tpath = teacher
    _train("thinned_kd", data, tpath, root / "thin", "--set", "prune.target_macs=0.4")
    m = json.loads((root / "thin" / "metrics.json").read_text())
    t = json.loads((root / "teacher" / "metrics.json").read_text())
    frac = m["forms"]["absorbed"]["macs"] / t["forms"]["teacher"]["macs"]
    assert m["prune_rule"]["achieved_fraction"] <= 0.4 and frac < 0.45


def test_cli_budget_errors_exit_2(teacher, tmp_path):
    root, data, tpath = teacher
    for setting, msg in (("prune.budget_kind=flops", "unknown prune.budget_kind 'flops'; valid: macs, params"),
                         ("prune.target_macs=1.5", "outside (0, 1]"),
                         ("prune.target_macs=0.05", "below the architecture's floor")):
        p = _train("structure_kd", data, tpath, tmp_path / "x", "--set", "prune.target_macs=0.4", "--set", setting,
                   check=False)
        assert p.returncode == 2 and msg in p.stderr, p.stderr[-1500:]
        assert "Traceback" not in p.stderr


def test_mobilenet_structure_kd_meets_a_macs_budget(tmp_path):
    data = str(tmp_path / "data")
    common = ("--set", "model.arch=mobilenet_v2", "--set", "model.width=0.25")
    cli("train", "--method", "teacher", "--preset", "quick", "--data", data, "--set", "data.synthetic=tiny",
        "--out", str(tmp_path / "t"), "--no-progress", "--threads", "1", *common)
    _train("structure_kd", data, str(tmp_path / "t" / "model.pt"), tmp_path / "s", *common,
           "--set", "prune.target_macs=0.6")
    m = json.loads((tmp_path / "s" / "metrics.json").read_text())
    frac = m["forms"]["absorbed"]["macs"] / m["forms"]["unpruned"]["macs"]
    assert m["config"]["model"]["arch"] == "mobilenet_v2" and 0.59 <= frac <= 0.6
    assert m["absorb_verification"]["max_rel"] < 1e-6
