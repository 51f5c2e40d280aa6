"""Tests for deap_lib.losses: each loss against a plain-Python loop reference and a hand-computed case.

References below use nested Python lists and float64 maths (math.sqrt/log/exp), written independently of
the vectorised library code.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from deap_lib.losses import (ARKD, LOSSES, PKT, RKD, AttentionTransfer, BlockFeatureLoss, CrossEntropyLabelSmooth,
                             FitNet, KLDistill, SimilarityPreserving, TripletLoss, build_loss, group_lasso,
                             group_norms, proximal_group_soft_threshold_)

SQRT2 = math.sqrt(2.0)


def rand(*shape, seed=0, positive=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(*shape, generator=g) if positive else torch.randn(*shape, generator=g)
    return x


def t(x):
    return torch.tensor(x, dtype=torch.float32)


# ----------------------------------------------------------------------------------------------------------
# plain references
def ref_softmax(row, T=1.0):
    m = max(row)
    e = [math.exp((v - m) / T) for v in row]
    s = sum(e)
    return [v / s for v in e]


def ref_dist(x, y):
    return math.sqrt(max(sum((a - b) ** 2 for a, b in zip(x, y)), 1e-12))


def ref_attention(fmap_i, p, normalize):
    """fmap_i: nested list C x H x W for one sample -> list of H*W."""
    C, H, W = len(fmap_i), len(fmap_i[0]), len(fmap_i[0][0])
    a = []
    for h in range(H):
        for w in range(W):
            a.append(sum(fmap_i[c][h][w] ** p for c in range(C)) / C)
    if normalize:
        n = max(math.sqrt(sum(v * v for v in a)), 1e-12)
        a = [v / n for v in a]
    return a


def ref_avgpool(fmap, kh, kw):
    """Non-overlapping kh x kw average pooling of a nested B x C x H x W list."""
    out = []
    for sample in fmap:
        chans = []
        for ch in sample:
            H, W = len(ch) // kh, len(ch[0]) // kw
            chans.append([[sum(ch[h * kh + a][w * kw + b] for a in range(kh) for b in range(kw)) / (kh * kw)
                           for w in range(W)] for h in range(H)])
        out.append(chans)
    return out


def ref_arkd_stage(s, t_, alpha, beta, p=2, normalize=True):
    B = len(s)
    a_s = [ref_attention(s[i], p, normalize) for i in range(B)]
    a_t = [ref_attention(t_[i], p, normalize) for i in range(B)]
    diag = off = 0.0
    for i in range(B):
        for j in range(B):
            dtt = ref_dist(a_t[i], a_t[j])
            dst = ref_dist(a_s[i], a_t[j])
            if i == j:
                diag += (dtt - dst) ** 2
            else:
                off += (dtt - dst) ** 2
    return alpha * diag / B + beta * off / B


# ----------------------------------------------------------------------------------------------------------
# CrossEntropyLabelSmooth
def test_ce_matches_loop():
    z, y, eps = rand(5, 7, seed=1), torch.tensor([0, 3, 6, 3, 1]), 0.1
    C, total = 7, 0.0
    for i, row in enumerate(z.tolist()):
        p = ref_softmax(row)
        for c in range(C):
            q = (1 - eps) * (c == int(y[i])) + eps / C
            total -= q * math.log(p[c])
    assert CrossEntropyLabelSmooth(eps)(z, y).item() == pytest.approx(total / 5, rel=1e-6)


def test_ce_hand_case_and_batch1():
    # z = [ln 3, 0] -> softmax [0.75, 0.25]; y = 0, eps = 0.1, C = 2 -> q = [0.95, 0.05];
    # L = -(0.95 ln 0.75 + 0.05 ln 0.25) = 0.95 * 0.287682 + 0.05 * 1.386294 = 0.342613
    z = t([[math.log(3.0), 0.0]]).requires_grad_()
    loss = CrossEntropyLabelSmooth(0.1)(z, torch.tensor([0]))
    assert loss.item() == pytest.approx(0.342613, abs=1e-6)
    loss.backward()
    assert torch.isfinite(z.grad).all()


def test_ce_bad_targets():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        CrossEntropyLabelSmooth()(rand(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="targets must be"):
        CrossEntropyLabelSmooth()(rand(2, 3), torch.tensor([[0], [1]]))


# ----------------------------------------------------------------------------------------------------------
# TripletLoss
def ref_triplet(x, y, margin, soft=False):
    B, total = len(x), 0.0
    for i in range(B):
        ap = max(ref_dist(x[i], x[j]) for j in range(B) if y[j] == y[i])
        an = min(ref_dist(x[i], x[j]) for j in range(B) if y[j] != y[i])
        total += math.log1p(math.exp(ap - an)) if soft else max(0.0, ap - an + margin)
    return total / B


def test_triplet_matches_loop():
    x, y = rand(12, 6, seed=2) * 3, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    lab = torch.tensor(y)
    assert TripletLoss(0.3)(x, lab).item() == pytest.approx(ref_triplet(x.tolist(), y, 0.3), abs=1e-5)
    assert TripletLoss(soft_margin=True)(x, lab).item() == pytest.approx(
        ref_triplet(x.tolist(), y, 0.0, soft=True), abs=1e-5)
    # large margin: nothing clipped; zero margin with well-separated clusters: all clipped
    far = torch.tensor([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [10.1, 0.0]])
    assert TripletLoss(0.3)(far, torch.tensor([0, 0, 1, 1])).item() == 0.0


def test_triplet_hand_case():
    # ids 0: (0,0), (3,4); ids 1: (0,1), (6,8). d01=5, d02=1, d03=10, d12=sqrt(18)=3*sqrt2, d13=5, d23=sqrt(85).
    # anchor0: ap 5, an 1 -> 4.3; anchor1: ap 5, an 3sqrt2 -> 5.3-3sqrt2; anchor2: ap sqrt85, an 1 -> sqrt85-0.7;
    # anchor3: ap sqrt85, an 5 -> sqrt85-4.7. mean = (4.2 - 3 sqrt2 + 2 sqrt85) / 4 = 4.599112
    x = t([[0, 0], [3, 4], [0, 1], [6, 8]])
    loss = TripletLoss(0.3)(x, torch.tensor([0, 0, 1, 1]))
    assert loss.item() == pytest.approx((4.2 - 3 * SQRT2 + 2 * math.sqrt(85)) / 4, abs=1e-5)


def test_triplet_no_negatives_is_zero_with_grad():
    x = rand(4, 3, seed=3).requires_grad_()
    loss = TripletLoss()(x, torch.tensor([5, 5, 5, 5]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    assert TripletLoss()(rand(1, 3), torch.tensor([0])).item() == 0.0  # batch size 1


# ----------------------------------------------------------------------------------------------------------
# KLDistill
def test_kl_matches_loop_and_teacher_detached():
    zs, zt, T = rand(4, 6, seed=4).requires_grad_(), rand(4, 6, seed=5).requires_grad_(), 2.0
    total = 0.0
    for rs, rt in zip(zs.tolist(), zt.tolist()):
        ps, pt = ref_softmax(rs, T), ref_softmax(rt, T)
        total += sum(a * math.log(a / b) for a, b in zip(pt, ps))
    loss = KLDistill(T)(zs, zt)
    assert loss.item() == pytest.approx(T * T * total / 4, rel=1e-5)
    loss.backward()
    assert zt.grad is None and torch.isfinite(zs.grad).all()


def test_kl_hand_case_batch1():
    # T = 2: z_t/T = [ln3, 0] -> p_t = [0.75, 0.25]; z_s = 0 -> p_s = [0.5, 0.5];
    # KL = 0.75 ln 1.5 + 0.25 ln 0.5 = 0.130812; x T^2 = 4 -> 0.523248
    loss = KLDistill(2.0)(t([[0.0, 0.0]]), t([[2 * math.log(3.0), 0.0]]))
    assert loss.item() == pytest.approx(0.523248, abs=1e-6)


# ----------------------------------------------------------------------------------------------------------
# BlockFeatureLoss (DL)
def test_dl_matches_loop():
    s = [rand(3, 4, seed=6), rand(3, 8, seed=7), rand(3, 2, seed=8)]
    tt = [rand(3, 4, seed=9), rand(3, 8, seed=10), rand(3, 2, seed=11)]
    total = 0.0
    for bs, bt in zip(s, tt):
        per = [math.sqrt(sum((a - b) ** 2 for a, b in zip(rs, rt))) for rs, rt in zip(bs.tolist(), bt.tolist())]
        total += sum(per) / 3
    assert BlockFeatureLoss()(s, tt).item() == pytest.approx(total, rel=1e-6)


def test_dl_hand_case_zero_grad_and_batch1():
    # block 1: sample0 ||(3,4)-(0,0)|| = 5, sample1 ||(1,1)-(1,1)|| = 0 -> mean 2.5
    # block 2: |2-0| = 2, |-1-0| = 1 -> mean 1.5; total 4.0
    s = [t([[0, 0], [1, 1]]).requires_grad_(), t([[0], [0]]).requires_grad_()]
    tt = [t([[3, 4], [1, 1]]), t([[2], [-1]])]
    loss = BlockFeatureLoss()(s, tt)
    assert loss.item() == pytest.approx(4.0, abs=1e-6)
    loss.backward()
    assert torch.isfinite(s[0].grad).all() and torch.equal(s[0].grad[1], torch.zeros(2))
    assert BlockFeatureLoss()([t([[1, 2]])], [t([[1, 0]])]).item() == pytest.approx(2.0)


def test_dl_errors():
    with pytest.raises(ValueError, match="2 student tensors but 1 teacher"):
        BlockFeatureLoss()([rand(2, 3), rand(2, 3)], [rand(2, 3)])
    with pytest.raises(ValueError, match=r"entry 1 shapes differ: student \(2, 3\) vs teacher \(2, 4\)"):
        BlockFeatureLoss()([rand(2, 3), rand(2, 3)], [rand(2, 3), rand(2, 4)])


# ----------------------------------------------------------------------------------------------------------
# ARKD
def _maps(seed):
    return [rand(4, 3, 4, 4, seed=seed, positive=True), rand(4, 5, 2, 2, seed=seed + 1, positive=True)]


@pytest.mark.parametrize("mode", ["cosine", "l2"])
def test_arkd_matches_loop(mode):
    s, tt = _maps(20), _maps(30)
    ref = sum(ref_arkd_stage(a.tolist(), b.tolist(), 10.0, 1.0, 2, mode == "cosine") for a, b in zip(s, tt))
    assert ARKD(10.0, 1.0, 2, mode)(s, tt).item() == pytest.approx(ref, rel=1e-5)
    # Gram-form distances: same up to fp32 cancellation noise on near-zero distances
    assert ARKD(10.0, 1.0, 2, mode, distance="gram")(s, tt).item() == pytest.approx(ref, rel=2e-3)


def test_arkd_hand_case_and_terms():
    # B=2, C=1, H=1, W=2, p=2, cosine. Teacher F: [1,0], [0,1] -> a_t = (1,0), (0,1).
    # Student F: [0,2] -> F^2 = [0,4] -> a_s0 = (0,1); [1,1] -> a_s1 = (1,1)/sqrt2.
    # D^tt = [[1e-6, sqrt2], [sqrt2, 1e-6]]; D^st_00 = sqrt2, D^st_01 = 1e-6 (clamp), D^st_10 = D^st_11 = sqrt(2-sqrt2).
    # diag = ((sqrt2-1e-6)^2 + (sqrt(2-sqrt2)-1e-6)^2) / 2 = 1.2928910
    # offdiag = ((sqrt2-1e-6)^2 + (sqrt2 - sqrt(2-sqrt2))^2) / 2 = 1.2104996; total = 10 diag + offdiag = 14.1394100
    s = [t([[[[0, 2]]], [[[1, 1]]]])]
    tt = [t([[[[1, 0]]], [[[0, 1]]]])]
    terms = ARKD(10.0, 1.0)(s, tt, return_terms=True)
    a = math.sqrt(2 - SQRT2)
    diag = ((SQRT2 - 1e-6) ** 2 + (a - 1e-6) ** 2) / 2
    off = ((SQRT2 - 1e-6) ** 2 + (SQRT2 - a) ** 2) / 2
    assert terms.diag.item() == pytest.approx(diag, abs=1e-6)
    assert terms.offdiag.item() == pytest.approx(off, abs=1e-6)
    assert terms.total.item() == pytest.approx(10 * diag + off, abs=1e-5)
    assert ARKD(0.0, 1.0)(s, tt).item() == pytest.approx(off, abs=1e-6)
    assert ARKD(10.0, 0.0)(s, tt).item() == pytest.approx(10 * diag, abs=1e-5)


def test_arkd_alpha_term_is_attention_transfer():
    s, tt = _maps(40), _maps(50)
    expected = 0.0
    for a, b in zip(s, tt):
        for i in range(4):
            ai = ref_attention(a[i].tolist(), 2, True)
            bi = ref_attention(b[i].tolist(), 2, True)
            expected += 10.0 * sum((u - v) ** 2 for u, v in zip(ai, bi)) / 4
    # (D^tt_ii - D^st_ii)^2 = (1e-6 - ||a_s - a_t||)^2 = ||a_s - a_t||^2 - 2e-6 ||a_s - a_t|| + 1e-12
    assert ARKD(10.0, 0.0)(s, tt).item() == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("distance", ["diff", "gram"])
def test_arkd_zero_for_identical_maps(distance):
    tt = _maps(60)
    s = [m.clone().requires_grad_() for m in tt]
    loss = ARKD(distance=distance)(s, tt)
    # D^st and D^tt are built from identical values (diagonals both exactly sqrt(1e-12) = 1e-6), so exactly 0
    assert loss.item() == 0.0
    loss.backward()
    assert all(torch.isfinite(m.grad).all() for m in s)


def test_arkd_batch1_and_teacher_detached():
    s = [rand(1, 3, 4, 4, seed=70, positive=True).requires_grad_()]
    tt = [rand(1, 3, 4, 4, seed=71, positive=True).requires_grad_()]
    terms = ARKD()(s, tt, return_terms=True)
    a_s, a_t = ref_attention(s[0][0].tolist(), 2, True), ref_attention(tt[0][0].tolist(), 2, True)
    assert terms.offdiag.item() == 0.0
    assert terms.total.item() == pytest.approx(10.0 * (1e-6 - ref_dist(a_s, a_t)) ** 2, rel=1e-5)
    terms.total.backward()
    assert tt[0].grad is None and torch.isfinite(s[0].grad).all()


@pytest.mark.parametrize("s_hw,t_hw,pool_student", [((8, 8), (4, 4), True), ((8, 6), (4, 3), True),
                                                    ((2, 3), (4, 6), False)])
def test_arkd_mixed_size_maps_are_pooled(s_hw, t_hw, pool_student):
    s = rand(3, 2, *s_hw, seed=80, positive=True)
    tt = rand(3, 4, *t_hw, seed=81, positive=True)
    sl, tl = s.tolist(), tt.tolist()
    if pool_student:
        sl = ref_avgpool(sl, s_hw[0] // t_hw[0], s_hw[1] // t_hw[1])
    else:
        tl = ref_avgpool(tl, t_hw[0] // s_hw[0], t_hw[1] // s_hw[1])
    ref = ref_arkd_stage(sl, tl, 10.0, 1.0)
    assert ARKD()([s], [tt]).item() == pytest.approx(ref, rel=1e-5)


def test_arkd_errors():
    with pytest.raises(ValueError, match="4-D"):
        ARKD()([rand(2, 3)], [rand(2, 3)])
    with pytest.raises(ValueError, match="batch sizes differ"):
        ARKD()([rand(2, 3, 4, 4)], [rand(3, 3, 4, 4)])
    with pytest.raises(ValueError, match="mode"):
        ARKD(mode="cos")


def test_losses_are_fp32_under_autocast():
    s, tt = _maps(90), _maps(91)
    x, y = rand(6, 8, seed=92), rand(6, 8, seed=93)
    lab = torch.tensor([0, 0, 1, 1, 2, 2])
    cases = [(ARKD(), (s, tt)), (AttentionTransfer(), (s, tt)), (SimilarityPreserving(), (s, tt)),
             (KLDistill(), (x, y)), (TripletLoss(), (x, lab)), (CrossEntropyLabelSmooth(), (x, lab)),
             (BlockFeatureLoss(), ([x], [y])), (RKD(), (x, y)), (PKT(), (x, y)), (FitNet(), (x, y))]
    for loss, args in cases:
        plain = loss(*args)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            cast = loss(*args)
        assert cast.dtype == torch.float32, type(loss).__name__
        assert cast.item() == pytest.approx(plain.item(), rel=1e-6, abs=1e-7), type(loss).__name__


# ----------------------------------------------------------------------------------------------------------
# Baselines
def test_attention_transfer_loop_and_hand_case():
    s, tt = _maps(100), _maps(110)
    ref = 0.0
    for a, b in zip(s, tt):
        per = 0.0
        for i in range(4):
            ai, bi = ref_attention(a[i].tolist(), 2, True), ref_attention(b[i].tolist(), 2, True)
            per += sum((u - v) ** 2 for u, v in zip(ai, bi))
        ref += per / 4
    assert AttentionTransfer()(s, tt).item() == pytest.approx(ref / 2, rel=1e-5)
    # s F = [0,2] -> a = (0,1); t F = [1,0] -> a = (1,0); ||diff||^2 = 2; one stage, one sample -> 2
    assert AttentionTransfer()([t([[[[0, 2]]]])], [t([[[[1, 0]]]])]).item() == pytest.approx(2.0)


def test_fitnet_loop_hand_and_regressor():
    s, tt = rand(3, 5, seed=120), rand(3, 5, seed=121)
    ref = sum((a - b) ** 2 for rs, rt in zip(s.tolist(), tt.tolist()) for a, b in zip(rs, rt)) / 15
    assert FitNet()(s, tt).item() == pytest.approx(ref, rel=1e-6)
    # ((1-3)^2 + (2-2)^2) / 2 = 2
    assert FitNet()(t([[1, 2]]), t([[3, 2]])).item() == pytest.approx(2.0)
    reg = nn.Linear(4, 5, bias=False)
    with torch.no_grad():
        reg.weight.copy_(rand(5, 4, seed=122))
    x = rand(3, 4, seed=123)
    loss = FitNet(reg)(x, tt)
    w = reg.weight.tolist()
    mapped = [[sum(w[o][k] * row[k] for k in range(4)) for o in range(5)] for row in x.tolist()]
    ref = sum((a - b) ** 2 for rs, rt in zip(mapped, tt.tolist()) for a, b in zip(rs, rt)) / 15
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    loss.backward()
    assert reg.weight.grad is not None
    with pytest.raises(ValueError, match="pass a regressor"):
        FitNet()(x, tt)


def ref_rkd(s, t_, wd=25.0, wa=50.0):
    B = len(s)

    def dists(x):
        d = [[0.0 if i == j else ref_dist(x[i], x[j]) for j in range(B)] for i in range(B)]
        m = sum(d[i][j] for i in range(B) for j in range(B) if i != j) / (B * (B - 1))
        return [[v / m for v in row] for row in d]

    def unit(v):
        n = math.sqrt(sum(a * a for a in v))
        return [a / max(n, 1e-12) for a in v]

    def angles(x):
        out = {}
        for j in range(B):
            for i in range(B):
                for k in range(B):
                    ei = unit([a - b for a, b in zip(x[i], x[j])])
                    ek = unit([a - b for a, b in zip(x[k], x[j])])
                    out[j, i, k] = sum(a * b for a, b in zip(ei, ek))
        return out

    def sl1(d):
        return 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5

    ds, dt = dists(s), dists(t_)
    ld = sum(sl1(ds[i][j] - dt[i][j]) for i in range(B) for j in range(B)) / B ** 2
    as_, at = angles(s), angles(t_)
    la = sum(sl1(as_[key] - at[key]) for key in as_) / B ** 3
    return wd * ld + wa * la


def test_rkd_loop_and_hand_case():
    s, tt = rand(5, 3, seed=130), rand(5, 4, seed=131) * 4
    assert RKD()(s, tt).item() == pytest.approx(ref_rkd(s.tolist(), tt.tolist()), rel=1e-4)
    # teacher right triangle (0,0),(1,0),(0,1): distances 1,1,sqrt2, mean m = (2+sqrt2)/3;
    # student equilateral: all normalised distances 1. Distance term: 4 entries (1/m - 1), 2 entries (sqrt2/m - 1),
    # smooth-L1 0.5 d^2, /9. Angle term: cosines at the vertices 0, 1/sqrt2, 1/sqrt2 vs 0.5 (2 ordered entries per
    # vertex), /27. Total = 25 * 0.0098124 + 50 * 0.0124365 = 0.867137
    h = math.sqrt(3) / 2
    m = (2 + SQRT2) / 3
    ld = (4 * 0.5 * (1 / m - 1) ** 2 + 2 * 0.5 * (SQRT2 / m - 1) ** 2) / 9
    la = (2 * 0.5 * 0.5 ** 2 + 4 * 0.5 * (0.5 - 1 / SQRT2) ** 2) / 27
    loss = RKD()(t([[0, 0], [1, 0], [0.5, h]]), t([[0, 0], [1, 0], [0, 1]]))
    assert loss.item() == pytest.approx(25 * ld + 50 * la, abs=1e-5)
    assert RKD()(rand(1, 3), rand(1, 3)).item() == 0.0


def test_pkt_loop_and_hand_case():
    s, tt, eps = rand(4, 3, seed=140), rand(4, 6, seed=141), 1e-7

    def probs(x):
        xn = []
        for row in x:
            n = math.sqrt(sum(v * v for v in row)) + eps
            xn.append([v / n for v in row])
        K = [[(sum(a * b for a, b in zip(u, v)) + 1) / 2 for v in xn] for u in xn]
        return [[k / sum(row) for k in row] for row in K]

    ps, pt = probs(s.tolist()), probs(tt.tolist())
    ref = sum(pt[i][j] * math.log((pt[i][j] + eps) / (ps[i][j] + eps)) for i in range(4) for j in range(4)) / 16
    assert PKT()(s, tt).item() == pytest.approx(ref, rel=1e-5)
    # teacher (1,0),(0,1): K = [[1,.5],[.5,1]] -> rows [2/3, 1/3]; student (1,0),(1,0): rows [1/2, 1/2]
    # per row 2/3 ln(4/3) + 1/3 ln(2/3) = 0.0566330; two rows / 4 entries = 0.0283165
    loss = PKT()(t([[1, 0], [1, 0]]), t([[1, 0], [0, 1]]))
    assert loss.item() == pytest.approx(0.0283165, abs=1e-6)


def test_sp_loop_and_hand_case():
    s = [rand(3, 2, 2, 2, seed=150), rand(3, 6, seed=151)]
    tt = [rand(3, 4, 2, 2, seed=152), rand(3, 5, seed=153)]
    ref = 0.0
    for a, b in zip(s, tt):
        fa, fb = a.flatten(1).tolist(), b.flatten(1).tolist()

        def gram(f):
            G = [[sum(x * y for x, y in zip(u, v)) for v in f] for u in f]
            return [[g / math.sqrt(sum(x * x for x in row)) for g in row] for row in G]

        ga, gb = gram(fa), gram(fb)
        ref += sum((ga[i][j] - gb[i][j]) ** 2 for i in range(3) for j in range(3)) / 9
    assert SimilarityPreserving()(s, tt).item() == pytest.approx(ref, rel=1e-5)
    # student (1,0),(1,1): G = [[1,1],[1,2]] -> rows (1,1)/sqrt2, (1,2)/sqrt5; teacher (1,0),(0,1): G = I.
    # row0: (1-1/sqrt2)^2 + 1/2 = 2 - sqrt2; row1: 1/5 + (1-2/sqrt5)^2 = 2 - 4/sqrt5; / B^2 = 4
    loss = SimilarityPreserving()(t([[1, 0], [1, 1]]), t([[1, 0], [0, 1]]))
    assert loss.item() == pytest.approx((4 - SQRT2 - 4 / math.sqrt(5)) / 4, abs=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Sparsity
def test_group_norms_and_lasso_match_loop():
    w = rand(4, 3, 1, 1, seed=160)
    wl = w.tolist()
    cols = [math.sqrt(sum(wl[o][c][0][0] ** 2 for o in range(4)) + 1e-12) for c in range(3)]
    rows = [math.sqrt(sum(wl[o][c][0][0] ** 2 for c in range(3)) + 1e-12) for o in range(4)]
    assert group_norms(w, "in").tolist() == pytest.approx(cols, rel=1e-6)
    assert group_norms(w, "out").tolist() == pytest.approx(rows, rel=1e-6)
    assert group_lasso(w, "in").item() == pytest.approx(sum(cols), rel=1e-6)
    assert group_lasso(w, "out").item() == pytest.approx(sum(rows), rel=1e-6)
    # hand case W = [[3, 0], [4, 0]]: columns 5 and 0 (-> sqrt(1e-12) = 1e-6), rows 3 and 4
    h = t([[3, 0], [4, 0]]).view(2, 2, 1, 1)
    assert group_norms(h, "in").tolist() == pytest.approx([5.0, 1e-6], rel=1e-6)
    assert group_norms(h, "out").tolist() == pytest.approx([3.0, 4.0])
    with pytest.raises(ValueError, match="'in'"):
        group_norms(w, "rows")


def test_group_lasso_gradient_finite_at_zero_groups():
    w = rand(3, 4, 1, 1, seed=161)
    w[:, 1] = 0.0   # an exactly zero column
    w[2] = 0.0      # an exactly zero row
    for dim in ("in", "out"):
        x = w.clone().requires_grad_()
        group_lasso(x, dim).backward()
        assert torch.isfinite(x.grad).all()
        zero = x.grad[:, 1] if dim == "in" else x.grad[2]
        assert torch.equal(zero, torch.zeros_like(zero))


def test_proximal_step_exact_zeros_and_scaling():
    # rows (3,0), (0,4), (3,4) have norms 3, 4, 5; tau = 4: norm 3 -> 0, norm 4 (= tau) -> 0,
    # norm 5 -> x (1 - 4/5) = 0.2 -> (0.6, 0.8)
    w = t([[3, 0], [0, 4], [3, 4]]).view(3, 2, 1, 1)
    proximal_group_soft_threshold_(w, "out", 4.0)
    assert w.flatten().tolist()[:4] == [0.0, 0.0, 0.0, 0.0]
    assert w.flatten().tolist()[4:] == pytest.approx([0.6, 0.8], abs=1e-7)
    # random weights, column groups; tau halfway between the 2nd and 3rd smallest column norms
    w = rand(5, 6, 1, 1, seed=162)
    orig = w.clone()
    norms = [math.sqrt(sum(orig[o, c, 0, 0].item() ** 2 for o in range(5))) for c in range(6)]
    srt = sorted(norms)
    tau = (srt[1] + srt[2]) / 2
    out = proximal_group_soft_threshold_(w, "in", tau)
    assert out is w
    for c in range(6):
        col = w[:, c, 0, 0]
        if norms[c] <= tau:
            assert torch.equal(col, torch.zeros(5))
        else:
            expect = [v * (1 - tau / norms[c]) for v in orig[:, c, 0, 0].tolist()]
            assert col.tolist() == pytest.approx(expect, rel=1e-4, abs=1e-7)
    assert (w.abs().sum(dim=(0, 2, 3)) == 0).sum().item() == 2
    # tau = 0 leaves the weight unchanged; negative tau is an error
    w2 = orig.clone()
    proximal_group_soft_threshold_(w2, "out", 0.0)
    assert torch.equal(w2, orig)
    with pytest.raises(ValueError, match="tau"):
        proximal_group_soft_threshold_(w2, "out", -1.0)


# ----------------------------------------------------------------------------------------------------------
# Registry
def test_registry_names_and_unknown_error():
    names = ["arkd", "at", "ce_ls", "dl", "fitnet", "kl", "pkt", "rkd", "sp", "triplet"]
    assert LOSSES.names() == names
    for n in names:
        assert isinstance(build_loss(n), nn.Module)
    with pytest.raises(KeyError) as err:
        LOSSES.get("mkd")
    assert "unknown loss 'mkd'" in str(err.value) and all(n in str(err.value) for n in names)
    assert build_loss("arkd", alpha=0.0).alpha == 0.0
