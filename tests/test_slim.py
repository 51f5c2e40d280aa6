"""``kd_slim`` (KD + network slimming, the naive arm): its penalty, its importance and its cut, against
hand-built references."""
import pytest
import torch
from torch import nn

from deap_lib.compression import select_and_prune
from deap_lib.methods import get_preset
from deap_lib.methods.base import UserError
from deap_lib.methods.slim import KDSlim, bn_scale_l1, bn_scale_scores
from deap_lib.models import build_model
from test_pruning import _randomise

SIZE = (3, 32, 32)


def _net(seed=0):
    """A plain quick-size ResNet-50 with random BN statistics and gammas of both signs."""
    torch.manual_seed(seed)
    model = _randomise(build_model("resnet50", 5, width=0.0625, embed_dim=8), seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.mul_(torch.randint(0, 2, m.weight.shape).mul(2).sub(1))
    return model.eval()


def _inner_bns(model):
    """conv1-BN and conv2-BN of every bottleneck, found by module name (not through the gates)."""
    return [m for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)
            and (name.endswith(".conv1.bn") or name.endswith(".conv2.bn")) and ".stage" in name]


def test_penalty_is_the_l1_of_the_inner_bn_scales_and_its_gradient_the_sign():
    model = _net()
    bns = _inner_bns(model)
    assert len(bns) == 2 * 16  # ResNet-50: 16 bottlenecks, two inner BNs each
    want = sum(bn.weight.detach().abs().sum() for bn in bns)
    got = bn_scale_l1(model)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    got.backward()
    for bn in bns:
        assert torch.equal(bn.weight.grad, torch.sign(bn.weight.detach()))
        assert bn.bias.grad is None or not bn.bias.grad.any()  # slimming leaves beta alone
    others = [m for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and m not in bns]
    assert others and all(m.weight.grad is None for m in others)  # stem, shortcut, conv3 BNs: no penalty


def test_scores_are_absolute_gammas_and_the_threshold_cut_removes_exactly_those_channels():
    model = _net(1)
    bns = _inner_bns(model)
    # channel 0 of every inner BN: gamma 0 and beta < 0, so it outputs ReLU(beta) = 0 and the cut is exact;
    # channel 1: a tiny gamma of the other sign (|gamma| under the threshold), beta < 0 too
    with torch.no_grad():
        for bn in bns:
            bn.weight[0], bn.bias[0] = 0.0, -1.0
            bn.weight[1], bn.bias[1] = -5e-4, -1.0
            bn.weight[2:] = bn.weight[2:].abs().clamp_min(0.1)
    scores = bn_scale_scores(model)
    flat = [s for pair in scores for s in pair]
    assert len(flat) == len(bns)
    for s, bn in zip(flat, bns):
        assert torch.equal(s, bn.weight.detach().abs())
    pruned, rule = select_and_prune(model, scores, threshold=1e-3, input_size=SIZE)
    assert rule["kept_channels"] == rule["total_channels"] - 2 * len(bns)
    widths_before = [list(w) for w in model.block_widths()]
    widths_after = [list(w) for w in pruned.block_widths()]
    assert all(a[0] == b[0] - 2 and a[1] == b[1] - 2 for a, b in zip(widths_after, widths_before))
    # both dropped channels output ReLU(~ -1) = 0: the cut changes nothing (eval embeddings)
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        a, b = model(x), pruned.eval()(x)
    assert torch.allclose(a, b, atol=1e-5)


def test_the_cut_loses_the_constant_of_a_zero_scale_channel_with_positive_beta():
    """Why kd_slim re-calibrates BN: a channel with gamma = 0 but beta > 0 outputs ReLU(beta) everywhere,
    which the cut removes (DEAP's zero pruner columns remove nothing of the kind)."""
    model = _net(2)
    bns = _inner_bns(model)
    with torch.no_grad():
        for bn in bns:
            bn.weight[0], bn.bias[0] = 0.0, 2.0
            bn.weight[1:] = bn.weight[1:].abs().clamp_min(0.1)
    pruned, _ = select_and_prune(model, bn_scale_scores(model), threshold=1e-3, input_size=SIZE)
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        assert not torch.allclose(model(x), pruned.eval()(x), atol=1e-3)


def test_kd_slim_refuses_a_gradual_schedule_and_defaults_to_recalibration():
    cfg = get_preset("quick", "kd_slim", **{"prune.schedule": "gradual", "prune.target_macs": 0.5})
    with pytest.raises(UserError, match="kd_slim cuts once after training"):
        KDSlim(cfg, build_model("resnet50", 5, width=0.0625, embed_dim=8),
               build_model("resnet50", 5, width=0.0625, embed_dim=8))
    assert get_preset("cpu", "kd_slim").prune.bn_recalib_batches == 20
    assert get_preset("cpu", "deap").prune.bn_recalib_batches == 0  # DEAP's cut removes exact zeros
