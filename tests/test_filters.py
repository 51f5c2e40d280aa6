"""kd_np_filters: DEAP's distillation with the group lasso on the 3x3 filters themselves (the dilemma arm of
notebook 03): the lasso against a plain loop, the scores in gate order, the exact cut of C1 channels whose
filter slices are zero, and a run through the runner."""
from __future__ import annotations

import math

import pytest
import torch

from deap_lib.compression import select_and_prune
from deap_lib.methods import UserError, get_preset, run
from deap_lib.methods.filters import filter_lasso, filter_scores, mid_filters
from deap_lib.models import build_model


def _net(arch="resnet50", seed=0):
    torch.manual_seed(seed)
    return build_model(arch, 5, width=0.25).eval()


def test_the_filter_lasso_is_the_sum_of_group_norms_of_every_3x3_conv():
    net = _net()
    ref = 0.0
    for w in mid_filters(net):
        w = w.detach()
        o, c = w.shape[:2]
        ins = sum(math.sqrt(sum(float(w[i, j, y, x]) ** 2 for i in range(o) for y in range(3) for x in range(3)) + 1e-12)
                  for j in range(c))
        outs = sum(math.sqrt(sum(float(w[i, j, y, x]) ** 2 for j in range(c) for y in range(3) for x in range(3)) + 1e-12)
                   for i in range(o))
        ref += 0.003 * ins + 0.007 * outs
    assert filter_lasso(net, 0.003, 0.007, 1e-12).item() == pytest.approx(ref, rel=1e-5)
    scores = filter_scores(net)
    assert [tuple(len(s) for s in b) for b in scores] == [tuple(g.parts[0][0].shape[0] for g in blk.gates())
                                                         for _, blk in net.named_blocks()]


def test_c1_channels_whose_filter_slices_are_zero_are_cut_exactly():
    net = _net()
    with torch.no_grad():
        for w in mid_filters(net):
            w[:, ::3] = 0.0  # every third input slice of every 3x3 conv
    x = torch.randn(2, 3, 64, 64)
    before = net.embed(x)
    pruned, _ = select_and_prune(net, filter_scores(net), threshold=1e-3, input_size=(3, 64, 64))
    kept = [w for w in pruned.block_widths()]
    full = [w for w in net.block_widths()]
    assert all(k[0] == f[0] - len(range(0, f[0], 3)) and k[1] == f[1] for k, f in zip(kept, full))
    assert torch.allclose(pruned.eval().embed(x), before, atol=1e-5, rtol=1e-5)


def test_kd_np_filters_trains_and_refuses_a_network_without_bottlenecks(tmp_path):
    root = str(tmp_path / "data")
    run(get_preset("quick", "teacher", **{"data.root": root, "optim.epochs": 2}), tmp_path / "t", progress=False)
    ov = {"data.root": root, "teacher_path": str(tmp_path / "t" / "model.pt"), "optim.epochs": 2}
    m = run(get_preset("quick", "kd_np_filters", **ov, **{"prune.target_macs": 0.6}), tmp_path / "f", progress=False)
    assert "loss_filter_lasso" in (tmp_path / "f" / "train_log.csv").read_text().splitlines()[0]
    f = m["forms"]
    assert f["absorbed"]["macs"] <= 0.61 * f["unpruned"]["macs"] and f["absorbed"]["mAP"] == f["pruned"]["mAP"]
    with pytest.raises(UserError, match="plain ResNet bottlenecks.*BasicBlock"):
        mid_filters(_net("resnet18"))
    with pytest.raises(UserError, match="plain ResNet bottlenecks.*Bottleneck"):
        mid_filters(build_model("resnet50", 5, width=0.25, pcp="deap"))  # pruners: that is DEAP
    assert get_preset("cpu", "kd_np_filters").prune.bn_recalib_batches == 20
