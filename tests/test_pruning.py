"""Channel selection, MACs-budget threshold, plain->PCP conversion and BN re-calibration."""
import math

import pytest
import torch
from torch import nn

from deap_lib.absorb import to_deploy
from deap_lib.complexity import profile
from deap_lib.models import build_model
from deap_lib.absorb import prune
from deap_lib.compression import select_and_prune
from deap_lib.pruning import (ZERO_THRESHOLD, GradualPruning, apply_masks, fraction_for_macs, gate_lasso,
                              group_scores, keep_mask, keep_masks, plain_to_pcp, recalibrate_bn, threshold_for_macs,
                              top_fraction_masks, widths_for, zero_groups_)

SIZE = (3, 32, 32)


def _randomise(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


def test_keep_masks_threshold_relative_and_min_channels():
    s = [(torch.tensor([0.5, 1e-4, 2e-3, 0.0]), torch.tensor([1e-5, 2e-5, 3e-6]))]
    (m1, m3), = keep_masks(s, 1e-3)
    assert m1.tolist() == [True, False, True, False]
    assert m3.tolist() == [False, True, False]  # none survives -> the single largest is kept
    (m1, m3), = keep_masks(s, 0.01, relative=True)  # thresholds 5e-3 and 2e-7
    assert m1.tolist() == [True, False, False, False] and m3.tolist() == [True, True, True]
    (m1, m3), = keep_masks(s, 10.0, min_channels=2)
    assert m1.tolist() == [True, False, True, False] and m3.tolist() == [True, True, False]
    # ties: the lower index is kept
    assert keep_mask(torch.tensor([1.0, 2.0, 2.0, 2.0]), 5.0, min_channels=2).tolist() == [False, True, True, False]
    with pytest.raises(ValueError, match="min_channels"):
        keep_mask(torch.ones(3), 0.1, min_channels=0)


def test_masks_must_match_the_blocks_and_their_gates():
    model = build_model("resnet50", 5, width=0.0625, pcp="cdd", embed_dim=8)
    scores = group_scores(model)
    assert all(len(pair) == 1 for pair in scores)  # CDD: one compactor gate per block (C3 only)
    masks = [tuple(torch.ones_like(s, dtype=torch.bool) for s in pair) for pair in scores]
    assert widths_for(model, masks) == [list(w) for w in model.block_widths()]
    with pytest.raises(ValueError, match="mask entries for 16 blocks"):
        widths_for(model, masks[:-1])
    with pytest.raises(ValueError, match="1 gate"):
        widths_for(model, [(m[0], m[0]) for m in masks])


def test_plain_to_pcp_is_exact_and_strict():
    torch.manual_seed(0)
    plain = _randomise(build_model("resnet50", 5, width=0.0625, embed_dim=8)).eval()
    pcp = plain_to_pcp(plain).eval()
    assert pcp.config["pcp"] == "deap"
    x = torch.randn(2, *SIZE)
    torch.testing.assert_close(pcp(x), plain(x), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="pcp=None"):
        plain_to_pcp(pcp)


def test_select_and_prune_removes_exactly_the_zeroed_groups():
    torch.manual_seed(0)
    model = _randomise(build_model("resnet50", 5, width=0.0625, pcp="deap", embed_dim=8)).eval()
    masks = []
    for i, b in enumerate(model.pcp_blocks()):
        c1, c3 = b.pruner1.weight.shape[1], b.pruner2.weight.shape[0]
        m1 = torch.ones(c1, dtype=torch.bool); m1[: (i % 3)] = False
        m3 = torch.ones(c3, dtype=torch.bool); m3[-1] = False
        masks.append((m1, m3))
    masked = apply_masks(model, masks)
    widths = [[int(a.sum()), int(b.sum())] for a, b in masks]
    pruned, rule = select_and_prune(masked, group_scores(masked), threshold=ZERO_THRESHOLD)
    assert [list(w) for w in pruned.block_widths()] == widths
    x = torch.randn(2, *SIZE)
    torch.testing.assert_close(pruned.eval()(x), masked(x), rtol=1e-5, atol=1e-5)
    assert rule["kept_channels"] == sum(sum(w) for w in widths)


def test_threshold_for_macs_meets_the_budget_with_the_smallest_cut():
    torch.manual_seed(0)
    model = build_model("resnet50", 5, width=0.0625, pcp="deap", embed_dim=8)
    with torch.no_grad():
        for b in model.pcp_blocks():  # distinct, random norms
            b.pruner1.weight.mul_(torch.rand(1, b.pruner1.weight.shape[1], 1, 1) + 0.01)
            b.pruner2.weight.mul_(torch.rand(b.pruner2.weight.shape[0], 1, 1, 1) + 0.01)
    scores = group_scores(model)
    full = profile(to_deploy(model), SIZE)["macs"]
    thr, frac = threshold_for_macs(model, scores, 0.5, SIZE)
    pruned, _ = select_and_prune(model, scores, threshold=thr)
    got = profile(to_deploy(pruned), SIZE)["macs"] / full
    assert got <= 0.5 and math.isclose(got, frac, rel_tol=1e-9)
    # the next smaller candidate threshold would exceed the budget (smallest cut that meets it)
    allv = torch.unique(torch.cat([s for p in scores for s in p]).double())
    prev = float(allv[allv < thr].max())
    pruned2, _ = select_and_prune(model, scores, threshold=prev)
    assert profile(to_deploy(pruned2), SIZE)["macs"] / full > 0.5


def test_target_macs_with_relative_scores_ranks_within_each_pruner():
    torch.manual_seed(0)
    model = build_model("resnet50", 5, width=0.0625, pcp="deap", embed_dim=8)
    with torch.no_grad():  # one pruner scaled down 1000x: absolute ranking would cut it whole
        for b in model.pcp_blocks():
            b.pruner1.weight.mul_(torch.rand(1, b.pruner1.weight.shape[1], 1, 1) + 0.01)
            b.pruner2.weight.mul_(torch.rand(b.pruner2.weight.shape[0], 1, 1, 1) + 0.01)
        small = list(model.pcp_blocks())[0]
        small.pruner1.weight.mul_(1e-3)
    scores = group_scores(model)
    pruned_abs, absolute = select_and_prune(model, scores, threshold=0.0, target_macs=0.7, input_size=SIZE)
    pruned, rel = select_and_prune(model, scores, threshold=0.0, relative=True, target_macs=0.7, input_size=SIZE)
    assert rel["relative"] == 1.0 and rel["achieved_macs_fraction"] <= 0.7
    # the same rule by hand: normalise each pruner's norms by its largest, then one global threshold
    normed = [tuple(s / s.max() for s in pair) for pair in scores]
    thr, frac = threshold_for_macs(model, normed, 0.7, SIZE)
    assert rel["threshold"] == thr and rel["achieved_macs_fraction"] == frac
    kept_small = pruned.backbone.stage1[0].pruner1.weight.shape[1]
    assert kept_small == int((normed[0][0] >= thr).sum()) > 1
    assert pruned_abs.backbone.stage1[0].pruner1.weight.shape[1] == 1  # absolute: cut to min_channels


def test_recalibrate_bn_gives_the_exact_batch_statistics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    net[1].momentum = 0.1
    net.eval()
    batches = [torch.randn(5, 3, 8, 8) for _ in range(3)]
    n = recalibrate_bn(net, iter(batches))
    assert n == 3 and net[1].momentum == 0.1 and not net.training
    with torch.no_grad():
        outs = [net[0](b) for b in batches]
    mean = torch.stack([o.mean(dim=(0, 2, 3)) for o in outs]).mean(0)
    var = torch.stack([o.var(dim=(0, 2, 3), unbiased=True) for o in outs]).mean(0)
    torch.testing.assert_close(net[1].running_mean, mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net[1].running_var, var, rtol=1e-5, atol=1e-6)
    before = net[1].running_mean.clone()
    assert recalibrate_bn(net, iter([])) == 0
    assert torch.equal(net[1].running_mean, before)


def test_gate_lasso_on_bn_gates_hand_value_and_scores():
    model = build_model("resnet50", 5, width=0.0625, embed_dim=8)
    expected = 0.0
    with torch.no_grad():
        for _, b in model.named_blocks():
            for bn in (b.conv1.bn, b.conv2.bn):
                bn.weight.fill_(3.0)
                bn.bias.fill_(4.0)
                expected += 5.0 * bn.num_features
    assert math.isclose(float(gate_lasso(model, eps=0.0).detach()), expected, rel_tol=1e-6)
    s1, s3 = group_scores(model)[0]
    assert torch.allclose(s1, torch.full_like(s1, 5.0)) and len(group_scores(model)) == len(list(model.named_blocks()))


# ----------------------------------------------------------------------------------------------- uniform / gradual
def _random_pcp(seed=0):
    torch.manual_seed(seed)
    model = build_model("resnet50", 5, width=0.0625, pcp="deap", embed_dim=8)
    with torch.no_grad():
        for b in model.pcp_blocks():
            b.pruner1.weight.mul_(torch.rand(1, b.pruner1.weight.shape[1], 1, 1) + 0.01)
            b.pruner2.weight.mul_(torch.rand(b.pruner2.weight.shape[0], 1, 1, 1) + 0.01)
    return model


def test_top_fraction_masks_hand_computed():
    s = torch.tensor([3.0, 1.0, 2.0, 0.5])
    (m, m2), = top_fraction_masks([(s, s.flip(0))], 0.5)
    assert m.tolist() == [True, False, True, False] and m2.tolist() == [False, True, False, True]
    (m, _), = top_fraction_masks([(s, s)], 0.3)  # ceil(0.3 * 4) = 2
    assert m.tolist() == [True, False, True, False]
    (m, _), = top_fraction_masks([(s, s)], 0.1, min_channels=1)  # ceil(0.4) = 1
    assert m.tolist() == [True, False, False, False]
    with pytest.raises(ValueError, match="keep fraction"):
        top_fraction_masks([(s, s)], 0.0)


def test_fraction_for_macs_meets_the_budget_with_the_largest_share():
    model = _random_pcp()
    scores = group_scores(model)
    full = profile(to_deploy(model), SIZE)["macs"]
    keep, frac = fraction_for_macs(model, scores, 0.4, SIZE)
    pruned, rule = select_and_prune(model, scores, threshold=0.0, target_macs=0.4, input_size=SIZE,
                                    allocation="uniform")
    got = profile(to_deploy(pruned), SIZE)["macs"] / full
    assert got <= 0.4 and math.isclose(got, frac, rel_tol=1e-9) and rule["keep_fraction"] == keep
    # every pruner keeps ceil(keep * n) of its largest norms
    for b, (s1, s3) in zip(pruned.pcp_blocks(), scores):
        assert b.pruner1.weight.shape[1] == math.ceil(keep * s1.numel() - 1e-9)
    # the next larger share would exceed the budget
    sizes = {s.numel() for p in scores for s in p}
    bigger = min(k / n for n in sizes for k in range(1, n + 1) if k / n > keep)
    masks = top_fraction_masks(scores, bigger)
    over = profile(to_deploy(prune(apply_masks(model, masks), threshold=ZERO_THRESHOLD)), SIZE)["macs"] / full
    assert over > 0.4
    with pytest.raises(ValueError, match="unknown allocation 'even'"):
        select_and_prune(model, scores, threshold=0.0, target_macs=0.4, input_size=SIZE, allocation="even")


def test_gradual_pruning_schedule_masks_and_resume():
    model = _random_pcp(1)
    g = GradualPruning(model, target_macs=0.5, total_epochs=10, end_frac=0.6, input_size=SIZE)
    assert g.macs_fraction_at(0) == 1.0 and g.macs_fraction_at(6) == pytest.approx(0.5)
    assert g.macs_fraction_at(10) == pytest.approx(0.5)
    assert g.macs_fraction_at(3) == pytest.approx(0.5 + 0.5 * 0.5 ** 3)  # cubic, hand-computed
    prev = 1.0
    for e in range(1, 11):
        info = g.update(e)
        assert info["prune_macs_frac"] <= g.macs_fraction_at(e) + 1e-12 and info["prune_macs_frac"] <= prev + 1e-12
        prev = info["prune_macs_frac"]
    assert prev <= 0.5  # (this tiny net's floor, stem and shortcuts, is ~35 % of its MACs)
    dropped = [(~m1, ~m3) for m1, m3 in g.masks]
    with torch.no_grad():  # an optimizer step would move the dropped groups; apply_ re-zeroes them
        for b in model.pcp_blocks():
            b.pruner1.weight.add_(0.1)
            b.pruner2.weight.add_(0.1)
    g.apply_()
    for b, (d1, d3) in zip(model.pcp_blocks(), dropped):
        assert b.pruner1.weight[:, d1].abs().max() == 0 and b.pruner2.weight[d3].abs().max() == 0
    again = GradualPruning(model, target_macs=0.5, total_epochs=10, input_size=SIZE)  # resumed run
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(again.masks, g.masks))
    # the final cut removes only zero groups: the pruned model computes what the masked one does
    x = torch.randn(2, *SIZE)
    pruned, _ = select_and_prune(model, group_scores(model), threshold=0.0, target_macs=0.5, input_size=SIZE,
                                 allocation="uniform")
    torch.testing.assert_close(pruned.eval()(x), model.eval()(x))
    with pytest.raises(ValueError, match="target_macs"):
        GradualPruning(model, target_macs=0.0, total_epochs=10, input_size=SIZE)


def test_zero_groups_on_a_plain_model_equals_cutting_those_channels():
    plain = _randomise(build_model("resnet50", 5, width=0.0625, embed_dim=8)).eval()
    masks = [(torch.arange(m1.numel()) % 3 != 0, torch.arange(m3.numel()) % 2 == 0) for m1, m3 in group_scores(plain)]
    zero_groups_(plain, masks)
    for (_, blk), (m1, m3) in zip(plain.named_blocks(), masks):
        assert blk.conv1.bn.weight[~m1].abs().max() == 0 and blk.conv2.bn.bias[~m3].abs().max() == 0
    cut, _ = select_and_prune(plain, group_scores(plain), threshold=ZERO_THRESHOLD)
    assert cut.config["pcp"] is None and not any(True for _ in cut.pcp_blocks())  # cut in place, no pruners
    assert [w for w in cut.block_widths()][0][0] == int(masks[0][0].sum())
    x = torch.randn(2, *SIZE)
    torch.testing.assert_close(cut.eval()(x), plain(x))


# ---------------------------------------------------------------------------------- hardware-aware widths
def test_rounded_width_rounds_up_to_the_multiple_and_never_past_the_gate():
    from deap_lib.pruning import rounded_width

    assert [rounded_width(k, 64, 8) for k in (1, 7, 8, 9, 16, 57, 64)] == [8, 8, 8, 16, 16, 64, 64]
    assert rounded_width(5, 12, 8) == 8 and rounded_width(9, 12, 8) == 12  # capped at the gate's width
    assert rounded_width(13, 64, 1) == 13
    with pytest.raises(ValueError, match="width_multiple must be >= 1"):
        rounded_width(3, 8, 0)
    # the threshold rule with rounding: the above-threshold channels plus the next-largest norms
    norms = torch.tensor([0.9, 1e-4, 0.5, 2e-4, 0.3, 5e-4, 0.0, 0.2, 1e-5, 0.7, 3e-4, 0.1])
    m = keep_mask(norms, 0.15, multiple=4)
    assert int(m.sum()) == 8 and m[[0, 2, 4, 7, 9]].all()  # 5 above 0.15, filled up with 0.1, 5e-4, 3e-4
    assert m[[11, 5, 10]].all() and not m[[1, 3, 6, 8]].any()


def _random_norm_deap(width=0.25):
    torch.manual_seed(0)
    model = build_model("resnet50", 5, width=width, pcp="deap", embed_dim=8)
    with torch.no_grad():
        for b in model.pcp_blocks():
            b.pruner1.weight.mul_(torch.rand(1, b.pruner1.weight.shape[1], 1, 1) + 0.01)
            b.pruner2.weight.mul_(torch.rand(b.pruner2.weight.shape[0], 1, 1, 1) + 0.01)
    return model


@pytest.mark.parametrize("allocation", ["global", "uniform"])
def test_rounded_budget_selection_meets_the_budget_with_multiples_of_8(allocation):
    model = _random_norm_deap()
    scores = group_scores(model)
    full = profile(to_deploy(model), SIZE)["macs"]
    for target in (0.6, 0.3):
        pruned, rule = select_and_prune(model, scores, threshold=0.0, target_macs=target, input_size=SIZE,
                                        allocation=allocation, multiple=8)
        widths = [w for b in pruned.block_widths() for w in b]
        assert all(w % 8 == 0 for w in widths), widths  # planes 16/32/64/128: every kept width a multiple
        got = profile(to_deploy(pruned), SIZE)["macs"] / full
        assert got <= target and math.isclose(got, rule["achieved_macs_fraction"], rel_tol=1e-9)
        assert rule["width_multiple"] == 8
        plain, _ = select_and_prune(model, scores, threshold=0.0, target_macs=target, input_size=SIZE,
                                    allocation=allocation)
        assert any(w % 8 for b in plain.block_widths() for w in b)  # without rounding: odd widths appear


def test_gradual_pruning_keeps_multiples_of_8():
    model = _random_norm_deap()
    gp = GradualPruning(model, target_macs=0.3, total_epochs=4, end_frac=0.5, input_size=SIZE,
                        allocation="uniform", multiple=8)
    for epoch in (1, 2, 3):
        row = gp.update(epoch)
        assert all(int(m.sum()) % 8 == 0 for pair in gp.masks for m in pair)
    assert row["prune_macs_frac"] <= 0.3 + 1e-9


def test_prune_config_multiple():
    from deap_lib.config import PruneConfig

    assert PruneConfig().multiple() == 1 and PruneConfig(round_widths=True).multiple() == 8
    assert PruneConfig(round_widths=True, width_multiple=4).multiple() == 4
    with pytest.raises(ValueError, match="prune.width_multiple must be >= 1"):
        PruneConfig(round_widths=True, width_multiple=0).multiple()


@pytest.mark.parametrize("arch,pcp", [("resnet50", "deap"), ("resnet18", "deap"), ("resnet50", "cdd"),
                                      ("mobilenet_v2", None)])
def test_budget_costs_equal_thop_counts_of_the_rebuilt_network(arch, pcp):
    """The selection rules cost a candidate by arithmetic (budget.ChannelCosts, built once per architecture);
    it must equal thop's count of the rebuilt deploy network, or a budget would select other channels."""
    from deap_lib.budget import deploy_cost
    from deap_lib.pruning import _macs_of, group_scores, top_fraction_masks, widths_for

    model = build_model(arch, 10, width=0.25, embed_dim=16, pcp=pcp)
    g = torch.Generator().manual_seed(0)
    scores = [tuple(torch.rand(s.shape, generator=g) for s in pair) for pair in group_scores(model)]
    for frac in (0.15, 0.5, 1.0):
        masks = top_fraction_masks(scores, frac)
        rebuilt = build_model(**dict(model.config, pcp=None, widths=widths_for(model, masks), deploy=True))
        for kind in ("macs", "params"):
            assert _macs_of(model, masks, (3, 48, 40), kind) == deploy_cost(rebuilt, (3, 48, 40), kind)
