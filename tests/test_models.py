"""Re-ID backbones, heads, PCP units and the torchvision loader (deap_lib.models)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

from deap_lib.models import MODELS, ReIDOutput, build_model, load_pretrained

W = 0.125  # narrow nets keep the tests fast: planes 8/16/32/64




def _bn_eval(x, bn):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _randomise_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))


# ------------------------------------------------------------------------------------------ construction
@pytest.mark.parametrize("arch,blocks,cg", [("resnet18", 8, 64), ("resnet50", 16, 256)])
@pytest.mark.parametrize("pcp", [None, "deap", "cdd"])
def test_output_contract_train_and_eval(arch, blocks, cg, pcp):
    torch.manual_seed(0)
    model = build_model(arch, 7, width=W, last_stride=1, pcp=pcp, embed_dim=24)
    x = torch.randn(3, 3, 64, 64)
    model.train()
    out = model(x)
    assert isinstance(out, ReIDOutput)
    assert out.logits.shape == (3, 7)
    assert out.global_feat.shape == (3, cg)
    assert out.embedding.shape == (3, 24)
    # 64 px: stem /4 -> 16, stage2 /2 -> 8, stage3 /2 -> 4, stage4 last stride 1 -> 4
    assert [tuple(m.shape) for m in out.stage_maps] == [(3, cg // 2, 4, 4), (3, cg, 4, 4)]
    assert len(out.block_feats) == blocks
    assert tuple(out.block_feats[-1].shape) == (3, cg)
    assert (out.stage_maps[0] >= 0).all() and (out.stage_maps[1] >= 0).all()  # post-ReLU
    # global feature = GAP of stage 4
    torch.testing.assert_close(out.global_feat, out.stage_maps[1].mean(dim=(2, 3)))
    model.eval()
    emb = model(x)
    assert emb.shape == (3, 24)
    feats = model.forward_features(x)  # any mode
    assert isinstance(feats, ReIDOutput)
    torch.testing.assert_close(feats.embedding, emb)


@pytest.mark.parametrize("head,dim", [("classblock", 32), ("bnneck", 256)])
def test_batch_size_one_both_modes(head, dim):
    model = build_model("resnet50", 5, width=W, head=head, embed_dim=32, pcp="deap")
    x = torch.randn(1, 3, 64, 64)
    model.train()
    out = model(x)
    assert out.logits.shape == (1, 5) and out.embedding.shape == (1, dim)
    assert all(f.shape[0] == 1 and f.dim() == 2 for f in out.block_feats)
    out.logits.sum().backward()
    model.eval()
    assert model(x).shape == (1, dim)


def test_last_stride_two_halves_stage4():
    model = build_model("resnet18", 3, width=W, last_stride=2).eval()
    out = model.forward_features(torch.randn(2, 3, 64, 64))
    assert out.stage_maps[1].shape[-2:] == (2, 2)


def test_width_multiplier_scales_stem_and_stages():
    model = build_model("resnet50", 3, width=0.3)
    # int(round(64 * 0.3)) = 19; planes 19/38/77/154; outputs 4x planes
    assert model.backbone.stem.conv.out_channels == 19
    assert [s[0].planes for s in model.backbone.stages()] == [19, 38, 77, 154]
    assert model.backbone.out_channels == 616
    tiny = build_model("resnet18", 3, width=0.001)
    assert tiny.backbone.stem.conv.out_channels == 1  # at least one channel


def test_registry_and_bad_arguments():
    assert set(MODELS.names()) == {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "mobilenet_v2"}
    with pytest.raises(KeyError, match="resnet50"):
        build_model("resnet51", 3)
    with pytest.raises(ValueError, match="pcp"):
        build_model("resnet50", 3, pcp="nope")
    with pytest.raises(KeyError, match="classblock"):
        build_model("resnet50", 3, head="nope")
    with pytest.raises(ValueError, match="one entry per block"):
        build_model("resnet50", 3, widths=[[4, 4]])
    with pytest.raises(ValueError, match=r"\(C1, C3\)"):
        build_model("resnet50", 3, width=W, widths=[[4]] * 16)


def test_block_counts_per_arch():
    for arch, n in [("resnet34", 16), ("resnet101", 33), ("resnet152", 50)]:
        model = build_model(arch, 3, width=1 / 64)
        assert len(list(model.named_blocks())) == n


def test_layout_strides_and_shortcuts():
    model = build_model("resnet50", 3, width=W, last_stride=1, pcp="deap")
    b = model.backbone
    assert b.stem.conv.kernel_size == (7, 7) and b.stem.conv.stride == (2, 2)
    x = torch.randn(2, 3, 15, 18)  # odd and even sizes, negative values
    b.maxpool.eval()
    assert torch.equal(b.maxpool(x), F.max_pool2d(x, 3, 2, 1))  # exact strided eval form
    b.maxpool.train()
    assert torch.equal(b.maxpool(x), F.max_pool2d(x, 3, 2, 1))
    firsts = [s[0] for s in b.stages()]
    assert [blk.conv2.conv.stride[0] for blk in firsts] == [1, 2, 2, 1]  # stride on the 3x3 conv
    assert [blk.conv1.conv.stride[0] for blk in firsts] == [1, 1, 1, 1]
    assert all(not isinstance(blk.shortcut, torch.nn.Identity) for blk in firsts)  # channel change
    assert isinstance(b.stage1[1].shortcut, torch.nn.Identity)
    blk = b.stage2[0]
    assert blk.pruner1.bias is None and blk.pruner2.bias is None
    torch.testing.assert_close(blk.pruner1.weight[:, :, 0, 0], torch.eye(16))


# ------------------------------------------------------------------------------------------ PCP order
def test_deap_bottleneck_matches_naive_reference():
    """docs/methods/deap.rst §PCP unit order, re-implemented with functional ops; block_feats = GAP of the pre-ReLU sum."""
    torch.manual_seed(1)
    model = build_model("resnet50", 3, width=W, pcp="deap").eval()
    _randomise_bn(model)
    blk = model.backbone.stage2[0]
    with torch.no_grad():
        blk.pruner1.weight.add_(0.3 * torch.randn_like(blk.pruner1.weight))
        blk.pruner2.weight.add_(0.3 * torch.randn_like(blk.pruner2.weight))
    x = torch.randn(2, blk.in_ch, 8, 8)

    def cbn(t, cb, stride=1, pad=0):
        return _bn_eval(F.conv2d(t, cb.conv.weight, stride=stride, padding=pad), cb.bn)

    h = F.relu(cbn(x, blk.conv1))
    h = F.conv2d(h, blk.pruner1.weight)
    h = cbn(h, blk.conv2, stride=2, pad=1)
    h = F.relu(F.conv2d(h, blk.pruner2.weight))
    s = cbn(h, blk.conv3) + cbn(x, blk.shortcut, stride=2)
    with torch.no_grad():
        out, s_got = blk.forward_with_sum(x)
        out_inplace = blk(x)
    torch.testing.assert_close(s_got, s, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, F.relu(s), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_inplace, F.relu(s), rtol=1e-5, atol=1e-5)


def test_basic_pcp_block_matches_naive_reference():
    torch.manual_seed(2)
    model = build_model("resnet18", 3, width=W, pcp="deap").eval()
    _randomise_bn(model)
    blk = model.backbone.stage3[0]
    assert blk.pruner1 is None and blk.compactor is None
    with torch.no_grad():
        blk.pruner2.weight.add_(0.3 * torch.randn_like(blk.pruner2.weight))
    x = torch.randn(1, blk.in_ch, 8, 8)
    h = _bn_eval(F.conv2d(x, blk.conv1.conv.weight, stride=2, padding=1), blk.conv1.bn)
    h = F.relu(F.conv2d(h, blk.pruner2.weight))
    s = _bn_eval(F.conv2d(h, blk.conv2.conv.weight, padding=1), blk.conv2.bn)
    s = s + _bn_eval(F.conv2d(x, blk.shortcut.conv.weight, stride=2), blk.shortcut.bn)
    with torch.no_grad():
        _, s_got = blk.forward_with_sum(x)
    torch.testing.assert_close(s_got, s, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pcp", ["cdd", None])
def test_block_trace_conv2_level_maps_match_naive_reference(pcp):
    """CDD's vectors (docs/methods/cdd.rst §Architecture): ``mid`` = BN2(conv2(.)) before the compactor and its ReLU, ``gated`` = the
    compactor's output before the ReLU (the same map for a plain block); the network pools them per block."""
    torch.manual_seed(4)
    model = build_model("resnet50", 3, width=W, pcp=pcp).eval()
    _randomise_bn(model)
    blk = model.backbone.stage2[0]
    if pcp:
        with torch.no_grad():
            blk.compactor.weight.add_(0.3 * torch.randn_like(blk.compactor.weight))
    x = torch.randn(2, blk.in_ch, 8, 8)

    def cbn(t, cb, stride=1, pad=0):
        return _bn_eval(F.conv2d(t, cb.conv.weight, stride=stride, padding=pad), cb.bn)

    mid = cbn(F.relu(cbn(x, blk.conv1)), blk.conv2, stride=2, pad=1)
    gated = F.conv2d(mid, blk.compactor.weight) if pcp else mid
    s = cbn(F.relu(gated), blk.conv3) + cbn(x, blk.shortcut, stride=2)
    with torch.no_grad():
        tr = blk.forward_trace(x)
        out = model.forward_features(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(tr.mid, mid, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tr.gated, gated, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tr.sum, s, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tr.out, F.relu(s), rtol=1e-5, atol=1e-5)
    assert (tr.mid < 0).any()  # pre-ReLU: negative entries survive
    n = len(list(model.backbone.named_blocks()))
    assert len(out.mid_feats) == len(out.gated_feats) == n
    assert [f.shape[1] for f in out.mid_feats] == [b.planes for _, b in model.backbone.named_blocks()]


def test_fresh_pcp_student_equals_teacher_form():
    """Identity pruners: a fresh DEAP / CDD student computes exactly the plain network."""
    torch.manual_seed(3)
    teacher = build_model("resnet50", 4, width=W, pcp=None)
    x = torch.randn(2, 3, 32, 32)
    for pcp in ("deap", "cdd"):
        student = build_model("resnet50", 4, width=W, pcp=pcp)
        for src, dst in [(teacher.backbone.stem, student.backbone.stem), (teacher.head, student.head)]:
            dst.load_state_dict(src.state_dict())
        for (_, tb), (_, sb) in zip(teacher.named_blocks(), student.named_blocks()):
            for name in ("conv1", "conv2", "conv3", "shortcut"):
                getattr(sb, name).load_state_dict(getattr(tb, name).state_dict())
        torch.testing.assert_close(student.eval()(x), teacher.eval()(x))


# ------------------------------------------------------------------------------------------ group lasso
def test_group_lasso_identity_init_counts_channels():
    model = build_model("resnet50", 3, width=W, pcp="deap")
    l1, l2 = model.group_lasso(eps=0.0)
    # every identity column / row has norm 1: sum over blocks of planes = 3*8 + 4*16 + 6*32 + 3*64
    assert l1.item() == pytest.approx(472) and l2.item() == pytest.approx(472)
    cdd = build_model("resnet50", 3, width=W, pcp="cdd")
    c1, c2 = cdd.group_lasso(eps=0.0)
    assert c1.item() == 0.0 and c2.item() == pytest.approx(472)
    basic = build_model("resnet18", 3, width=W, pcp="deap")
    b1, b2 = basic.group_lasso(eps=0.0)
    assert b1.item() == 0.0 and b2.item() == pytest.approx(2 * (8 + 16 + 32 + 64))
    t1, t2 = build_model("resnet18", 3, width=W).group_lasso()
    assert t1.item() == 0.0 and t2.item() == 0.0


def test_scale_invariant_group_lasso_hand_computed_and_invariant():
    model = build_model("resnet50", 3, width=W, pcp="deap")
    # identity pruners: each pruner's ratio is planes / sqrt(planes) = sqrt(planes)
    l1, l2 = model.group_lasso(eps=0.0, scale_invariant=True)
    want = 3 * 8 ** 0.5 + 4 * 16 ** 0.5 + 6 * 32 ** 0.5 + 3 * 64 ** 0.5
    assert l1.item() == pytest.approx(want) and l2.item() == pytest.approx(want)
    with torch.no_grad():
        blk = model.backbone.stage1[0]
        blk.pruner1.weight.zero_()
        blk.pruner1.weight[0, 0], blk.pruner1.weight[1, 0], blk.pruner1.weight[2, 1] = 3.0, 4.0, 12.0
    # columns 5 and 12, Frobenius 13: ratio 17 / 13 for this pruner
    m1, _ = model.group_lasso(eps=0.0, scale_invariant=True)
    assert m1.item() == pytest.approx(want - 8 ** 0.5 + 17 / 13)
    with torch.no_grad():  # scaling a pruner changes the plain sum, not the ratio
        blk.pruner1.weight.mul_(0.01)
    s1, _ = model.group_lasso(eps=0.0, scale_invariant=True)
    p1, _ = model.group_lasso(eps=0.0)
    assert s1.item() == pytest.approx(m1.item()) and p1.item() == pytest.approx(472 - 8 + 0.17)


def test_group_lasso_hand_computed():
    model = build_model("resnet50", 3, width=W, pcp="deap")
    with torch.no_grad():
        for blk in model.pcp_blocks():
            blk.pruner1.weight.zero_()
            blk.pruner2.weight.zero_()
        blk = model.backbone.stage1[0]  # planes 8
        blk.pruner1.weight[0, 0] = 3.0
        blk.pruner1.weight[1, 0] = 4.0   # column 0: norm 5
        blk.pruner1.weight[2, 1] = -2.0  # column 1: norm 2
        blk.pruner2.weight[5, 0] = 1.0
        blk.pruner2.weight[5, 3] = 1.0   # row 5: norm sqrt(2)
        blk.pruner2.weight[6, 2] = 0.5   # row 6: norm 0.5
    eps = 1e-12
    n_groups = 472  # per pruner, over all blocks
    l1, l2 = model.group_lasso(eps=eps)
    exp1 = math.sqrt(25 + eps) + math.sqrt(4 + eps) + (n_groups - 2) * math.sqrt(eps)
    exp2 = math.sqrt(2 + eps) + math.sqrt(0.25 + eps) + (n_groups - 2) * math.sqrt(eps)
    assert l1.item() == pytest.approx(exp1, rel=1e-6)
    assert l2.item() == pytest.approx(exp2, rel=1e-6)
    assert l1.dim() == 0 and l2.dim() == 0
    (l1 + l2).backward()  # eps keeps the gradient at all-zero groups finite (= 0)
    g = blk.pruner1.weight.grad
    assert torch.isfinite(g).all() and g[:, 4].abs().sum() == 0
    assert g[0, 0].item() == pytest.approx(3 / 5, rel=1e-5)
    norms = model.pruner_norms()
    assert list(norms)[:2] == ["stage1.0.pruner1", "stage1.0.pruner2"]
    assert norms["stage1.0.pruner1"][:3].tolist() == pytest.approx([5.0, 2.0, 0.0])
    assert norms["stage1.0.pruner2"][5].item() == pytest.approx(math.sqrt(2))
    assert not norms["stage1.0.pruner1"].requires_grad


def test_pcp_blocks_and_classifier_parameters():
    model = build_model("resnet50", 9, width=W, pcp="cdd", embed_dim=16)
    assert len(list(model.pcp_blocks())) == 16
    assert [n for n, _ in model.named_pcp_blocks()][:4] == ["stage1.0", "stage1.1", "stage1.2", "stage2.0"]
    assert all(b.compactor is not None and b.pruner1 is None for b in model.pcp_blocks())
    cls = list(model.classifier_parameters())
    assert len(cls) == 1 and cls[0].shape == (9, 16)
    assert cls[0] is model.head.classifier.weight
    assert len(list(build_model("resnet50", 9, width=W).pcp_blocks())) == 0


def test_classblock_init():
    torch.manual_seed(0)
    model = build_model("resnet50", 50, width=0.25, embed_dim=512)
    head = model.head
    assert head.fc.bias is None and head.classifier.bias is None
    assert head.classifier.weight.std().item() == pytest.approx(0.001, rel=0.1)
    # Kaiming normal, fan_out = 512: std = sqrt(2 / 512)
    assert head.fc.weight.std().item() == pytest.approx(math.sqrt(2 / 512), rel=0.1)
    assert (head.bn_in.weight == 1).all() and (head.bn_out.bias == 0).all()


# ------------------------------------------------------------------------------------------ paper preset
def test_paper_preset_teacher_complexity():
    """ResNet-101, width 1, last stride 1, 256x256, head excluded: ~42.5 M params, ~13.0 G MACs (thop)."""
    import thop

    model = build_model("resnet101", 576, width=1.0, last_stride=1, pcp=None).eval()
    macs, params = thop.profile(model.backbone, inputs=(torch.zeros(1, 3, 256, 256),), verbose=False)
    assert params == pytest.approx(42.5e6, rel=0.03)
    assert macs == pytest.approx(13.0e9, rel=0.03)
    assert model.backbone.out_channels == 2048 and len(list(model.named_blocks())) == 33
    thin = build_model("resnet101", 576, width=1 / 32, last_stride=1).eval()
    out = thin.forward_features(torch.zeros(1, 3, 256, 256))
    assert [tuple(m.shape[2:]) for m in out.stage_maps] == [(16, 16), (16, 16)]


# ------------------------------------------------------------------------------------------ pretrained
def _tv_file(tmp_path, arch, seed=0):
    torch.manual_seed(seed)
    tv = getattr(torchvision.models, arch)(weights=None)
    _randomise_bn(tv, seed)
    path = tmp_path / f"{arch}.pth"
    torch.save(tv.state_dict(), path)
    return tv.eval(), path


def _tv_stages(tv, x):
    x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    x = tv.layer2(tv.layer1(x))
    s3 = tv.layer3(x)
    return s3, tv.layer4(s3)


@pytest.mark.parametrize("arch,pcp", [("resnet50", "deap"), ("resnet18", None)])
def test_load_pretrained_round_trip(tmp_path, arch, pcp):
    tv, path = _tv_file(tmp_path, arch)
    ours = build_model(arch, 10, last_stride=2, pcp=pcp)
    load_pretrained(ours, str(path))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        s3, s4 = _tv_stages(tv, x)
        out = ours.eval().forward_features(x)
    torch.testing.assert_close(out.stage_maps[0], s3, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.stage_maps[1], s4, rtol=1e-5, atol=1e-5)
    if pcp:  # pruners untouched (identity)
        torch.testing.assert_close(ours.backbone.stage1[0].pruner1.weight[:, :, 0, 0], torch.eye(64))


def test_load_pretrained_errors(tmp_path):
    tv, path = _tv_file(tmp_path, "resnet18")
    sd = tv.state_dict()
    model = build_model("resnet18", 3)

    missing = dict(sd)
    del missing["layer2.0.downsample.1.running_var"]
    p = tmp_path / "missing.pth"
    torch.save(missing, p)
    with pytest.raises(ValueError, match=r"missing keys: layer2\.0\.downsample\.1\.running_var") as e:
        load_pretrained(model, str(p))
    assert "missing.pth" in str(e.value)

    extra = dict(sd, **{"layer9.weight": torch.zeros(1)})
    p = tmp_path / "extra.pth"
    torch.save(extra, p)
    with pytest.raises(ValueError, match=r"unexpected keys: layer9\.weight"):
        load_pretrained(model, str(p))

    shaped = dict(sd)
    shaped["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    p = tmp_path / "shape.pth"
    torch.save(shaped, p)
    with pytest.raises(ValueError, match=r"layer1\.0\.conv1\.weight: file \(64, 64, 1, 1\) vs expected \(64, 64, 3, 3\)"):
        load_pretrained(model, str(p))

    p = tmp_path / "list.pth"
    torch.save([1, 2, 3], p)
    with pytest.raises(ValueError, match="does not hold a state dict"):
        load_pretrained(model, str(p))
    p = tmp_path / "text.pth"
    p.write_text("hello")
    with pytest.raises(ValueError, match="text.pth"):
        load_pretrained(model, str(p))
    with pytest.raises(FileNotFoundError):
        load_pretrained(model, str(tmp_path / "nope.pth"))
    # wrong architecture for the file: every resnet50 key is missing / unexpected
    with pytest.raises(ValueError, match="does not match torchvision resnet34"):
        load_pretrained(build_model("resnet34", 3), str(path))
    with pytest.raises(ValueError, match="width-1.0"):
        load_pretrained(build_model("resnet18", 3, width=0.5), str(path))


def test_inplace_embed_path_supports_autograd():
    """``embed`` (in-place residual add / ReLU) gives the forward_features embedding and backpropagates."""
    torch.manual_seed(4)
    model = build_model("resnet18", 3, width=W, pcp="deap").train()
    x = torch.randn(2, 3, 32, 32)
    model.embed(x).sum().backward()
    assert all(p.grad is not None for p in model.backbone.parameters())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.embed(x), model.forward_features(x).embedding)
