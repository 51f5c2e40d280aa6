"""Channel selection, MACs-budget threshold, plain->PCP conversion and BN re-calibration."""
import math

import pytest
import torch
from torch import nn

from deap_lib.absorb import to_deploy
from deap_lib.complexity import profile
from deap_lib.models import build_model
from deap_lib.pruning import (ZERO_THRESHOLD, apply_masks, bn_channel_lasso, bn_scores, keep_masks, plain_to_pcp,
                              pruner_scores, recalibrate_bn, select_and_prune, threshold_for_macs)

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
    pruned, rule = select_and_prune(masked, pruner_scores(masked), threshold=ZERO_THRESHOLD)
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
    scores = pruner_scores(model)
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


def test_bn_channel_lasso_hand_value_and_scores():
    model = build_model("resnet50", 5, width=0.0625, embed_dim=8)
    expected = 0.0
    with torch.no_grad():
        for _, b in model.named_blocks():
            for bn in (b.conv1.bn, b.conv2.bn):
                bn.weight.fill_(3.0)
                bn.bias.fill_(4.0)
                expected += 5.0 * bn.num_features
    assert math.isclose(float(bn_channel_lasso(model, eps=0.0).detach()), expected, rel_tol=1e-6)
    s1, s3 = bn_scores(model)[0]
    assert torch.allclose(s1, torch.full_like(s1, 5.0)) and len(bn_scores(model)) == len(list(model.named_blocks()))
