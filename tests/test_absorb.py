"""Pruning and absorption (deap_lib.absorb): equivalence, thresholds, widths and complexity."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from deap_lib.absorb import AbsorbReport, absorb, deploy_forms, fold_bn, prune, select_channels, to_deploy, verify
from deap_lib.models import build_model

W = 0.125  # planes 8/16/32/64, stem 8
TOL = 1e-5  # relative: max|f_a - f_b| / max|f_b| in fp32 (observed ~1e-6)




def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def _randomise(model, seed=0, noise=0.2):
    """Random BN statistics/affine and random non-identity pruners (deterministic)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                n = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
        for blk in model.pcp_blocks():
            for p in (blk.pruner1, blk.pruner2, blk.compactor):
                if p is not None:
                    p.weight.add_(noise * torch.randn(p.weight.shape, generator=g))
    return model


def _zero(model, col_rule=lambda c: c % 3 == 1, row_rule=lambda o: o % 2 == 0):
    """Zero pruner-1 columns / output-pruner rows chosen by index rules; returns the expected widths."""
    widths = []
    with torch.no_grad():
        for _, blk in model.named_blocks():
            post = blk.pruner2 if blk.pruner2 is not None else blk.compactor
            rows = [o for o in range(post.weight.shape[0]) if row_rule(o)]
            post.weight[rows] = 0.0
            kept3 = post.weight.shape[0] - len(rows)
            if blk.kind == "basic":
                widths.append((kept3,))
                continue
            if blk.pruner1 is not None:
                cols = [c for c in range(blk.pruner1.weight.shape[1]) if col_rule(c)]
                blk.pruner1.weight[:, cols] = 0.0
                widths.append((blk.pruner1.weight.shape[1] - len(cols), kept3))
            else:
                widths.append((blk.widths[0], kept3))
    return widths


# ------------------------------------------------------------------------------------------ equivalence
@pytest.mark.parametrize("arch", ["resnet50", "resnet18"])
@pytest.mark.parametrize("pcp", ["deap", "cdd"])
@pytest.mark.parametrize("last_stride", [1, 2])
def test_absorbed_equals_pruned_random_bn_and_pruners(arch, pcp, last_stride):
    """Stride-1 and stride-2 blocks (stages 1 / 2-4), random BN stats, random pruners, batch size 1."""
    torch.manual_seed(0)
    model = _randomise(build_model(arch, 11, width=W, last_stride=last_stride, pcp=pcp), seed=1)
    widths = _zero(model)
    with torch.no_grad():  # some channels below threshold but not zero: pruned != unpruned there
        blk = next(model.pcp_blocks())
        post = blk.pruner2 if blk.pruner2 is not None else blk.compactor
        post.weight[1].mul_(1e-6)
        widths[0] = widths[0][:-1] + (widths[0][-1] - 1,)
    deploy, report = absorb(model, 1e-3, profile=False)
    pruned = prune(model, 1e-3)
    assert pruned.block_widths() == widths == deploy.block_widths()
    assert report.verification["max_rel"] <= 1e-4
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = pruned.eval()(x)
        got = deploy(x)
    assert got.shape == (1, 512)
    assert _rel(got, ref) < TOL


def test_unpruned_deploy_and_teacher_fold_exactly():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    for pcp in ("deap", None):
        model = _randomise(build_model("resnet50", 5, width=W, pcp=pcp), seed=2).eval()
        deploy = to_deploy(model)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in deploy.backbone.modules())
        assert deploy.config["deploy"] and deploy.config["pcp"] is None and deploy.config["widths"] is None
        with torch.no_grad():
            assert _rel(deploy(x), model(x)) < TOL
    teacher = build_model("resnet18", 5, width=W)
    d, report = absorb(teacher, profile=False)
    assert report.notes and report.kept_fraction() == 1.0
    with pytest.raises(ValueError, match="no PCP units"):
        prune(teacher)


def test_deploy_structure_and_one_channel_bias_shape():
    """A pruner keeping exactly one channel: merged bias keeps shape (1,) (docs/decisions.rst §Pitfalls of the released code)."""
    torch.manual_seed(0)
    model = _randomise(build_model("resnet50", 5, width=W, pcp="deap"), seed=3)
    basic = _randomise(build_model("resnet18", 5, width=W, pcp="cdd"), seed=4)
    with torch.no_grad():
        blk = model.backbone.stage2[0]
        blk.pruner1.weight[:, 1:] = 0.0
        blk.pruner2.weight[:-1] = 0.0
        bblk = basic.backbone.stage3[1]
        bblk.compactor.weight[1:] = 0.0
    x = torch.randn(1, 3, 64, 64)
    for net, name, expect in [(model, "stage2.0", (1, 1)), (basic, "stage3.1", (1,))]:
        deploy, report = absorb(net, 1e-3, profile=False)
        kept = dict((b.name, b.kept) for b in report.blocks)
        assert kept[name] == expect
        dblk = dict(deploy.named_blocks())[name]
        merged = dblk.conv2 if expect == (1, 1) else dblk.conv1
        assert merged.conv.bias.shape == (1,) and merged.conv.out_channels == 1
        for m in deploy.modules():
            assert not isinstance(m, nn.BatchNorm2d)
            if isinstance(m, nn.Conv2d):
                assert m.bias is not None and m.bias.shape == (m.out_channels,)
        assert all(b.pruner1 is None and b.pruner2 is None and b.compactor is None for _, b in deploy.named_blocks())
        with torch.no_grad():
            assert _rel(deploy(x), prune(net).eval()(x)) < TOL
            assert _rel(deploy(x), net.eval()(x)) < TOL  # removed channels were exact zeros


def test_fold_bn_hand_computed():
    from deap_lib.models.convbn import ConvBN

    cb = ConvBN(1, 2, 1)
    with torch.no_grad():
        cb.conv.weight.copy_(torch.tensor([2.0, -1.0]).reshape(2, 1, 1, 1))
        cb.bn.weight.copy_(torch.tensor([3.0, 0.5]))
        cb.bn.bias.copy_(torch.tensor([1.0, -2.0]))
        cb.bn.running_mean.copy_(torch.tensor([0.5, 4.0]))
        cb.bn.running_var.copy_(torch.tensor([4.0 - 1e-5, 0.25 - 1e-5]))  # std 2 and 0.5 with eps 1e-5
    w, b = fold_bn(cb)
    # scale = gamma / std = 1.5, 1.0; W' = (3, -1); b' = beta - mu * scale = (0.25, -6)
    assert w.flatten().tolist() == pytest.approx([3.0, -1.0])
    assert b.tolist() == pytest.approx([0.25, -6.0])


# ------------------------------------------------------------------------------------------ thresholds
def test_threshold_exact_zero_channels_and_outputs_unchanged():
    torch.manual_seed(0)
    model = _randomise(build_model("resnet50", 5, width=W, pcp="deap"), seed=5)
    expected = _zero(model, col_rule=lambda c: c < 3, row_rule=lambda o: o % 4 == 3)
    # planes 8: C1' = 5, C3' = 6; planes 16: 13, 12; 32: 29, 24; 64: 61, 48
    assert expected[0] == (5, 6) and expected[-1] == (61, 48)
    deploy, report = absorb(model, 1e-3, profile=False)
    assert deploy.block_widths() == expected
    assert [b.kept for b in report.blocks] == expected
    assert [b.original for b in report.blocks][:3] == [(8, 8)] * 3
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert _rel(deploy(x), model.eval()(x)) < TOL


@pytest.mark.parametrize("min_channels", [1, 3])
def test_threshold_above_every_norm_keeps_min_channels(min_channels):
    model = _randomise(build_model("resnet50", 5, width=W, pcp="deap"), seed=6, noise=0.0)
    with torch.no_grad():  # distinct norms: column / row c scaled by (c + 1)
        for blk in model.pcp_blocks():
            n = blk.planes
            blk.pruner1.weight.mul_(torch.arange(1, n + 1, dtype=torch.float32).reshape(1, n, 1, 1))
            blk.pruner2.weight.mul_(torch.arange(1, n + 1, dtype=torch.float32).reshape(n, 1, 1, 1))
    pruned = prune(model, threshold=1e6, min_channels=min_channels)
    assert pruned.block_widths() == [(min_channels, min_channels)] * 16
    blk, src = pruned.backbone.stage3[2], model.backbone.stage3[2]
    top = list(range(32 - min_channels, 32))  # largest norms
    torch.testing.assert_close(blk.pruner1.weight, src.pruner1.weight[:, top])
    torch.testing.assert_close(blk.pruner2.weight, src.pruner2.weight[top])
    torch.testing.assert_close(blk.conv1.bn.running_var, src.conv1.bn.running_var[top])
    torch.testing.assert_close(blk.conv3.conv.weight, src.conv3.conv.weight[:, top])
    deploy, _ = absorb(model, threshold=1e6, min_channels=min_channels, profile=False)
    assert deploy.block_widths() == [(min_channels, min_channels)] * 16


def test_relative_threshold():
    model = build_model("resnet18", 5, width=W, pcp="deap")
    with torch.no_grad():
        for blk in model.pcp_blocks():
            blk.pruner2.weight.mul_(1e-4)  # every norm 1e-4 < 1e-3
            blk.pruner2.weight[0].mul_(1e-4)  # one channel at 1e-4 of the largest norm
    assert prune(model, 1e-3).block_widths() == [(1,)] * 8
    rel = prune(model, 1e-3, relative=True).block_widths()
    assert rel == [(b.planes - 1,) for b in model.pcp_blocks()]


def test_select_channels_rules():
    n = torch.tensor([0.5, 0.0, 2.0, 2.0, 1e-4])
    assert select_channels(n, 1e-3).tolist() == [0, 2, 3]
    assert select_channels(n, 10.0).tolist() == [2]  # ties -> lower index
    assert select_channels(n, 10.0, min_channels=2).tolist() == [2, 3]
    assert select_channels(n, 1.0, min_channels=3).tolist() == [0, 2, 3]
    assert select_channels(n, 0.0).tolist() == [0, 1, 2, 3, 4]
    assert select_channels(n, 0.3, relative=True).tolist() == [2, 3]
    with pytest.raises(ValueError):
        select_channels(n, 1e-3, min_channels=0)


def test_check_raises_and_verify():
    model = _randomise(build_model("resnet18", 5, width=W, pcp="deap"), seed=7)
    with pytest.raises(RuntimeError, match="differs from the pruned model"):
        absorb(model, tol=-1.0, profile=False)
    d, r = absorb(model, verify_tol=1e-4, profile=False)
    assert r.tol == 1e-4
    model.train()
    res = verify(model, d, torch.randn(2, 3, 32, 32))
    assert set(res) == {"max_abs", "max_rel"} and res["max_rel"] < TOL
    assert model.training and not d.training  # modes restored


def test_deploy_forms_three_forms():
    model = _randomise(build_model("resnet50", 5, width=W, pcp="deap"), seed=8)
    widths = _zero(model)
    forms = deploy_forms(model, 1e-3)
    assert forms["unpruned_deploy"].block_widths() == model.block_widths()
    assert forms["pruned"].config["pcp"] == "deap" and forms["pruned"].block_widths() == widths
    assert any(isinstance(m, nn.BatchNorm2d) for m in forms["pruned"].modules())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        f = {k: m.eval()(x) for k, m in forms.items()}
        assert _rel(f["unpruned_deploy"], model.eval()(x)) < TOL
        assert _rel(f["absorbed"], f["pruned"]) < TOL


# ------------------------------------------------------------------------------------------ complexity
def _deploy_counts(widths, planes=(8, 16, 32, 64), layers=(3, 4, 6, 3), stem=8, size=64, last_stride=1,
                   embed=512, classes=5):
    """Closed-form thop MACs and parameters of a deploy bottleneck ReIDNet with a ClassBlock head.
    thop: conv = Ho*Wo*Cout*Cin*k*k (bias not counted), linear = in*out, affine BN1d = 4*numel; ReLU,
    max-pool and the functional GAP count 0; the classifier does not run in eval mode."""
    h = (size + 6 - 7) // 2 + 1
    macs, params = h * h * stem * 3 * 49, stem * 3 * 49 + stem
    h = (h + 2 - 3) // 2 + 1
    cin, k = stem, 0
    for s, (p, n) in enumerate(zip(planes, layers)):
        for i in range(n):
            stride = (1, 2, 2, last_stride)[s] if i == 0 else 1
            c1, c3 = widths[k]
            out = 4 * p
            ho = (h - 1) // stride + 1
            macs += h * h * c1 * cin + ho * ho * c3 * c1 * 9 + ho * ho * out * c3
            params += (cin * c1 + c1) + (c1 * c3 * 9 + c3) + (c3 * out + out)
            if stride != 1 or cin != out:
                macs += ho * ho * out * cin
                params += cin * out + out
            cin, h, k = out, ho, k + 1
    macs += 4 * cin + cin * embed + 4 * embed
    params += 2 * cin + cin * embed + 2 * embed
    return macs, params, params + embed * classes


def test_macs_and_params_drop_by_removed_channels():
    import thop

    model = _randomise(build_model("resnet50", 5, width=W, pcp="deap"), seed=9)
    widths = _zero(model, col_rule=lambda c: c % 2 == 0, row_rule=lambda o: o % 4 != 0)
    deploy, report = absorb(model, 1e-3, input_size=(3, 64, 64))
    full = to_deploy(model)
    full_widths = [(b.planes, b.planes) for b in model.pcp_blocks()]
    x = torch.zeros(1, 3, 64, 64)
    for net, w in [(full, full_widths), (deploy, widths)]:
        macs, params_no_cls, params = _deploy_counts(w)
        got_macs, got_params = thop.profile(net, inputs=(x,), verbose=False)
        assert got_macs == macs
        assert got_params == params_no_cls
        assert sum(p.numel() for p in net.parameters()) == params
    drop = _deploy_counts(full_widths)[0] - _deploy_counts(widths)[0]
    assert drop > 0.5 * _deploy_counts(full_widths)[0]
    if report.complexity:  # filled through deap_lib.complexity.profile
        assert report.complexity["absorbed"]["macs"] == _deploy_counts(widths)[0]
        assert report.complexity["unpruned_deploy"]["macs"] == _deploy_counts(full_widths)[0]
        assert report.complexity["absorbed"]["params"] == _deploy_counts(widths)[2]
        assert report.complexity["absorbed"]["params_no_classifier"] == _deploy_counts(widths)[1]
    else:
        pytest.skip("deap_lib.complexity unavailable: " + "; ".join(report.notes))


def test_report_contents():
    model = build_model("resnet18", 5, width=W, pcp="deap")
    _zero(model, row_rule=lambda o: o >= 2)
    _, report = absorb(model, profile=False)
    assert isinstance(report, AbsorbReport)
    assert report.widths() == [[2]] * 8
    assert report.kept_fraction() == pytest.approx(16 / (2 * (8 + 16 + 32 + 64)))
    d = report.to_dict()
    assert d["blocks"][0]["name"] == "stage1.0" and d["kept_fraction"] == report.kept_fraction()
    assert "stage4.1" in report.table()


# ------------------------------------------------------------------------------------------ every kind of gate
@pytest.mark.parametrize("arch", ["resnet50", "resnet18"])
@pytest.mark.parametrize("pcp", ["deap", "cdd", None])  # None: a plain network gated by its BN (gamma, beta)
def test_every_gate_kind_is_cut_and_absorbed_exactly_by_the_same_functions(arch, pcp):
    """DEAP pruners, the CDD compactor and BN gates of a plain student go through one path: scores
    (group_scores) -> selection (select_and_prune, MACs budget) -> cut (prune) -> absorb. The reference is
    independent of the cut: the original network with the dropped groups zeroed (apply_masks), in float64."""
    from deap_lib.compression import select_and_prune
    from deap_lib.pruning import apply_masks, group_scores, top_fraction_masks

    torch.manual_seed(0)
    model = _randomise(build_model(arch, 7, width=W, pcp=pcp, embed_dim=16)).double().eval()
    if pcp is None:  # distinct random BN gates, so the selection has something to rank
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for _, blk in model.named_blocks():
                for gate in blk.gates():
                    for t, _ in gate.parts:
                        t.mul_(0.2 + torch.rand(t.shape, generator=g, dtype=t.dtype))
    scores = group_scores(model)
    assert all(len(pair) == len(blk.gates()) for pair, (_, blk) in zip(scores, model.named_blocks()))
    size = (3, 32, 32)
    pruned, rule = select_and_prune(model, scores, threshold=0.0, target_macs=0.5, input_size=size,
                                    allocation="uniform")
    masks = top_fraction_masks(scores, rule["keep_fraction"])
    reference = apply_masks(model, masks).eval()  # the gated network with the dropped groups zeroed
    x = torch.randn(3, *size, dtype=torch.float64)
    with torch.no_grad():
        ref = reference(x)
        assert (pruned.eval()(x) - ref).abs().max().item() <= 1e-10 * ref.abs().max().item()
    deploy, report = absorb(pruned, threshold=0.0, input_size=size, profile=False)
    assert report.verification["max_rel"] < 1e-10
    with torch.no_grad():
        assert (deploy(x) - ref).abs().max().item() <= 1e-10 * ref.abs().max().item()
    assert deploy.config["deploy"] and deploy.config["pcp"] is None
    assert rule["achieved_macs_fraction"] <= 0.5
    kept = sum(sum(w) for w in deploy.block_widths())
    assert kept < sum(sum(w) for w in model.block_widths())


def test_prune_by_threshold_needs_pruners_or_masks():
    plain = build_model("resnet50", 7, width=W, embed_dim=16)
    with pytest.raises(ValueError, match="masks="):
        prune(plain, threshold=1e-3)
    deploy = to_deploy(plain)
    with pytest.raises(ValueError, match="deploy form"):
        prune(deploy, masks=[])
