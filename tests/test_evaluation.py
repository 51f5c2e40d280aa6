"""Tests for deap_lib.evaluation against plain reference implementations and hand-computed cases."""
import math

import numpy as np
import pytest
import torch

from deap_lib.evaluation import (bootstrap_interval, compute_distance, evaluate, paired_bootstrap,
                                 re_ranking, summarize)


# ------------------------------------------------------------------------------- plain references
def naive_eval(dist, q_pids, g_pids, q_cams, g_cams, max_rank=50):
    """One query at a time, written plainly; ties broken by gallery index."""
    aps, inps, cmcs = [], [], []
    for i in range(len(q_pids)):
        order = sorted(range(len(g_pids)), key=lambda j: (float(dist[i][j]), j))
        kept = [j for j in order if not (g_pids[j] == q_pids[i] and g_cams[j] == q_cams[i])]
        hits = [g_pids[j] == q_pids[i] for j in kept]
        if not any(hits):
            continue
        hit_ranks = [r + 1 for r, h in enumerate(hits) if h]
        aps.append(sum((k + 1) / r for k, r in enumerate(hit_ranks)) / len(hit_ranks))
        inps.append(len(hit_ranks) / hit_ranks[-1])
        cmcs.append([1.0 if hit_ranks[0] <= r + 1 else 0.0 for r in range(max_rank)])
    return sum(aps) / len(aps), np.mean(np.array(cmcs), axis=0), sum(inps) / len(inps), len(aps)


def random_case(rng, nq, ng, n_ids, n_cams, integer=False):
    q_pids = rng.integers(0, n_ids, nq)
    g_pids = rng.integers(0, n_ids, ng)
    q_cams = rng.integers(0, n_cams, nq)
    g_cams = rng.integers(0, n_cams, ng)
    dist = rng.integers(-2, 4, (nq, ng)) if integer else rng.random((nq, ng))
    return dist, q_pids, g_pids, q_cams, g_cams


# ------------------------------------------------------------------------------- evaluate
@pytest.mark.parametrize("seed", range(6))
def test_evaluate_matches_naive_random(seed):
    rng = np.random.default_rng(seed)
    nq, ng = int(rng.integers(1, 30)), int(rng.integers(1, 120))
    dist, qp, gp, qc, gc = random_case(rng, nq, ng, n_ids=int(rng.integers(2, 8)), n_cams=3)
    try:
        ref = naive_eval(dist, qp, gp, qc, gc, max_rank=10)
    except ZeroDivisionError:  # no valid query in this draw
        with pytest.raises(ValueError, match="no query"):
            evaluate(dist, qp, gp, qc, gc, max_rank=10)
        return
    for d in (dist.astype(np.float32), dist.astype(np.float64), torch.from_numpy(dist.astype(np.float32))):
        for chunk in (None, 1, 7):
            out = evaluate(d, qp, gp, qc, gc, max_rank=10, chunk_size=chunk)
            assert out["mAP"] == pytest.approx(ref[0], abs=1e-12)
            np.testing.assert_allclose(out["cmc"], ref[1], atol=1e-12)
            assert out["mINP"] == pytest.approx(ref[2], abs=1e-12)
            assert out["num_valid"] == ref[3]
            assert out["num_valid"] + out["num_skipped"] == nq


@pytest.mark.parametrize("seed", range(4))
def test_evaluate_ties_follow_stable_gallery_index_rule(seed):
    rng = np.random.default_rng(100 + seed)
    dist, qp, gp, qc, gc = random_case(rng, 25, 90, n_ids=5, n_cams=2, integer=True)
    ref = naive_eval(dist, qp, gp, qc, gc, max_rank=20)
    # the same integer distances as int64, float32 (fast key path; half the zeros written as -0.0,
    # which must tie with +0.0) and float64
    f32 = dist.astype(np.float32)
    f32[(f32 == 0) & (rng.random(f32.shape) < 0.5)] = -0.0
    for d in (dist, f32, dist.astype(np.float64)):
        out = evaluate(d, qp, gp, qc, gc, max_rank=20, chunk_size=6)
        assert out["mAP"] == pytest.approx(ref[0], abs=1e-12)
        np.testing.assert_allclose(out["cmc"], ref[1], atol=1e-12)
        assert out["mINP"] == pytest.approx(ref[2], abs=1e-12)


def test_evaluate_tie_rule_prefers_lower_gallery_index():
    # all distances equal: the ranking is the gallery order
    g_pids = np.array([5, 7, 7, 5])
    out = evaluate(np.zeros((1, 4), np.float32), [7], g_pids, [0], [1, 1, 1, 1], max_rank=4,
                   return_per_query=True)
    # kept order: g0 (5), g1 (7) hit at rank 2, g2 (7) hit at rank 3, g3 (5)
    assert out["first_hit"][0] == 1
    assert out["mAP"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert out["mINP"] == pytest.approx(2 / 3)


def hand_case():
    #            g0   g1   g2   g3   g4   g5
    g_pids = [1, 1, 2, 1, 3, 2]
    g_cams = [0, 1, 1, 1, 0, 0]
    q_pids = [1, 2, 3, 9, 3]
    q_cams = [0, 1, 0, 0, 2]
    dist = np.array([
        # A: g0 removed (pid 1, cam 0); kept g3+, g2, g4, g1+, g5 -> hits at ranks 1, 4
        [0.10, 0.50, 0.20, 0.15, 0.40, 0.60],
        # B: g2 removed (pid 2, cam 1); kept g3, g1, g0, g5+, g4 -> hit at rank 4
        [0.30, 0.20, 0.90, 0.10, 0.50, 0.40],
        # C: only match g4 has the same camera -> removed -> skipped
        [0.10, 0.20, 0.30, 0.40, 0.50, 0.60],
        # D: pid 9 is not in the gallery -> skipped
        [0.10, 0.20, 0.30, 0.40, 0.50, 0.60],
        # E: g4 (pid 3, cam 0) first -> hit at rank 1
        [0.50, 0.60, 0.70, 0.80, 0.05, 0.90],
    ], dtype=np.float32)
    return dist, q_pids, g_pids, q_cams, g_cams


def test_evaluate_hand_case():
    out = evaluate(*hand_case(), max_rank=8, return_per_query=True)
    ap_a, ap_b, ap_e = (1 / 1 + 2 / 4) / 2, 1 / 4, 1.0
    inp_a, inp_b, inp_e = 2 / 4, 1 / 4, 1.0
    assert out["num_valid"] == 3 and out["num_skipped"] == 2
    assert out["mAP"] == pytest.approx((ap_a + ap_b + ap_e) / 3)
    assert out["mINP"] == pytest.approx((inp_a + inp_b + inp_e) / 3)
    # 5 kept items per query; CMC beyond is padded with the last value
    np.testing.assert_allclose(out["cmc"], [2 / 3, 2 / 3, 2 / 3, 1, 1, 1, 1, 1])
    assert out["cmc"].shape == (8,)
    np.testing.assert_array_equal(out["valid"], [True, True, False, False, True])
    np.testing.assert_array_equal(out["valid_mask"], out["valid"])
    np.testing.assert_array_equal(out["first_hit"], [0, 3, -1, -1, 0])
    np.testing.assert_allclose(out["ap"][[0, 1, 4]], [ap_a, ap_b, ap_e])
    np.testing.assert_allclose(out["inp"][[0, 1, 4]], [inp_a, inp_b, inp_e])
    assert np.isnan(out["ap"][2]) and np.isnan(out["inp"][3])
    np.testing.assert_array_equal(out["num_pos"], [2, 1, 0, 0, 1])
    np.testing.assert_array_equal(out["q_pids"], [1, 2, 3, 9, 3])


def test_minp_hand_case():
    # one query, positives (pid 4) at ranks 1, 3, 6 of 7
    g_pids = [4, 0, 4, 0, 0, 4, 0]
    dist = np.arange(7, dtype=np.float32)[None]
    out = evaluate(dist, [4], g_pids, [0], [1] * 7, max_rank=3)
    assert out["mINP"] == pytest.approx(3 / 6)
    assert out["mAP"] == pytest.approx((1 / 1 + 2 / 3 + 3 / 6) / 3)
    np.testing.assert_allclose(out["cmc"], [1, 1, 1])


def test_evaluate_string_labels_and_single_query():
    dist, qp, gp, qc, gc = hand_case()
    names = {1: "a", 2: "b", 3: "c", 9: "z"}
    out = evaluate(dist[:1], [names[qp[0]]], [names[p] for p in gp], qc[:1], gc)
    assert out["mAP"] == pytest.approx(0.75) and out["num_valid"] == 1


def test_evaluate_errors():
    dist, qp, gp, qc, gc = hand_case()
    with pytest.raises(ValueError, match="g_pids has length 5"):
        evaluate(dist, qp, gp[:5], qc, gc)
    bad = dist.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN.*row 1"):
        evaluate(bad, qp, gp, qc, gc)
    with pytest.raises(ValueError, match="no query"):
        evaluate(dist[2:4], qp[2:4], gp, qc[2:4], gc)
    with pytest.raises(ValueError, match="2-D"):
        evaluate(dist[0], qp, gp, qc, gc)


# ------------------------------------------------------------------------------- distances
def np_reference(q, g, metric):
    q, g = q.astype(np.float64), g.astype(np.float64)
    if metric in ("cosine", "arccos"):
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        gn = g / np.linalg.norm(g, axis=1, keepdims=True)
        cos = qn @ gn.T
        return 1 - cos if metric == "cosine" else np.arccos(np.clip(cos, -1 + 1e-5, 1 - 1e-5))
    d2 = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    return np.sqrt(d2) if metric == "euclidean" else d2


@pytest.mark.parametrize("metric", ["cosine", "arccos", "euclidean", "sqeuclidean"])
def test_compute_distance_matches_numpy(metric):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((7, 16)).astype(np.float32)
    g = rng.standard_normal((11, 16)).astype(np.float32)
    ref = np_reference(q, g, metric)
    for qi, gi in ((q, g), (torch.from_numpy(q), torch.from_numpy(g))):
        out = compute_distance(qi, gi, metric, chunk=3)
        assert out.dtype == np.float32 and out.shape == (7, 11)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_compute_distance_normalize_flag():
    rng = np.random.default_rng(1)
    q, g = rng.standard_normal((3, 5)), rng.standard_normal((4, 5))
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    np.testing.assert_allclose(compute_distance(q, g, "sqeuclidean", normalize=True),
                               np_reference(qn, gn, "sqeuclidean"), rtol=1e-6, atol=1e-6)


def test_euclidean_exact_zero_for_identical_vectors():
    rng = np.random.default_rng(2)
    # large common offset: the |q|^2 + |g|^2 - 2 q.g expansion alone would not cancel to 0
    f = (100.0 + rng.standard_normal((6, 64))).astype(np.float32)
    g = np.concatenate([f[::-1], f + 1e-2], axis=0)
    for metric in ("euclidean", "sqeuclidean"):
        d = compute_distance(torch.from_numpy(f), torch.from_numpy(g), metric)
        assert (d >= 0).all()
        np.testing.assert_array_equal(d[np.arange(6), 5 - np.arange(6)], 0.0)
        # near-duplicates (offset 1e-2 in 64 dims) are exact too
        expect = 1e-4 * 64 if metric == "sqeuclidean" else math.sqrt(1e-4 * 64)
        np.testing.assert_allclose(d[np.arange(6), 6 + np.arange(6)], expect, rtol=1e-3)
        np.testing.assert_allclose(d, np_reference(f, g, metric), rtol=1e-5, atol=1e-6)


def test_compute_distance_errors():
    with pytest.raises(ValueError, match="feature dims differ"):
        compute_distance(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="unknown metric"):
        compute_distance(np.zeros((2, 3)), np.zeros((2, 3)), "manhattan")
    with pytest.raises(ValueError, match="2-D"):
        compute_distance(np.zeros(3), np.zeros((2, 3)))


# ------------------------------------------------------------------------------- re-ranking
def naive_re_ranking(full, nq, k1, k2, lam):
    """Zhong et al. written plainly with Python sets over the full N x N distance matrix."""
    n = full.shape[0]

    def nbrs(p, k):  # p first, then the k nearest others (ties by index)
        others = sorted((j for j in range(n) if j != p), key=lambda j: (full[p, j], j))
        return [p] + others[:k]

    def recip(p, k):
        return {g for g in nbrs(p, k) if p in nbrs(g, k)}

    kh = max(1, int(round(k1 / 2)))
    V = np.zeros((n, n))
    for p in range(n):
        r = recip(p, k1)
        star = set(r)
        for q in r:
            rq = recip(q, kh)
            if 3 * len(rq & r) >= 2 * len(rq):
                star |= rq
        for g in star:
            V[p, g] = math.exp(-full[p, g])
        V[p] /= V[p].sum()
    if k2 > 1:
        V = np.stack([np.mean([V[g] for g in nbrs(p, k2 - 1)], axis=0) for p in range(n)])
    out = np.zeros((nq, n - nq))
    for i in range(nq):
        for j in range(n - nq):
            a, b = V[i], V[nq + j]
            jac = 1 - np.minimum(a, b).sum() / np.maximum(a, b).sum()
            out[i, j] = (1 - lam) * jac + lam * full[i, nq + j]
    return out


def blocks(qf, gf):
    return (compute_distance(qf, gf, "sqeuclidean"), compute_distance(qf, qf, "sqeuclidean"),
            compute_distance(gf, gf, "sqeuclidean"))


@pytest.mark.parametrize("k1,k2", [(4, 3), (5, 1), (3, 2)])
def test_re_ranking_matches_naive(k1, k2):
    rng = np.random.default_rng(k1 * 10 + k2)
    centers = rng.standard_normal((4, 5))
    qf = centers[rng.integers(0, 4, 6)] + 0.6 * rng.standard_normal((6, 5))
    gf = centers[rng.integers(0, 4, 20)] + 0.6 * rng.standard_normal((20, 5))
    qg, qq, gg = blocks(qf, gf)
    full = np.block([[qq, qg], [qg.T, gg]]).astype(np.float64)
    ref = naive_re_ranking(full, 6, k1, k2, 0.3)
    out = re_ranking(qg, qq, gg, k1=k1, k2=k2, lambda_value=0.3)
    assert out.shape == (6, 20) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_re_ranking_properties_and_improves_map():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((30, 32))
    qp, gp = rng.integers(0, 30, 120), rng.integers(0, 30, 900)
    qf = centers[qp] + 1.0 * rng.standard_normal((120, 32))
    gf = centers[gp] + 1.0 * rng.standard_normal((900, 32))
    qg = compute_distance(qf, gf, "sqeuclidean", normalize=True)
    qq = compute_distance(qf, qf, "sqeuclidean", normalize=True)
    gg = compute_distance(gf, gf, "sqeuclidean", normalize=True)
    qc, gc = np.zeros(120, int), np.ones(900, int)
    rr = re_ranking(qg, qq, gg)
    assert rr.shape == qg.shape and np.isfinite(rr).all()
    np.testing.assert_array_equal(re_ranking(qg, qq, gg, lambda_value=1.0), qg)
    base, new = evaluate(qg, qp, gp, qc, gc)["mAP"], evaluate(rr, qp, gp, qc, gc)["mAP"]
    assert new > base + 0.05, (base, new)
    with pytest.raises(ValueError, match="q_q_dist must have shape"):
        re_ranking(qg, gg, gg)


# ------------------------------------------------------------------------------- bootstrap
def fake_per_query(rng, n_ids, per_id=3, shift=0.0):
    pids = np.repeat(np.arange(n_ids), per_id)
    base = rng.random(n_ids)[pids]  # identity effect -> clustered data
    ap = np.clip(base * 0.6 + 0.4 * rng.random(len(pids)) + shift, 0, 1)
    valid = rng.random(len(pids)) > 0.1
    first_hit = np.where(valid, rng.integers(0, 3, len(pids)), -1)
    return {"ap": np.where(valid, ap, np.nan), "inp": np.where(valid, ap / 2, np.nan),
            "first_hit": first_hit, "valid": valid, "q_pids": pids}


def test_bootstrap_matches_plain_loop_and_contains_estimate():
    rng = np.random.default_rng(3)
    pq = fake_per_query(rng, 25)
    out = bootstrap_interval(pq, n_boot=200, seed=7, level=0.9)
    v = pq["valid"]
    assert out["mAP"]["estimate"] == pytest.approx(pq["ap"][v].mean())
    assert out["rank1"]["estimate"] == pytest.approx((pq["first_hit"][v] == 0).mean())
    for m in ("mAP", "rank1", "mINP"):
        assert out[m]["low"] <= out[m]["estimate"] <= out[m]["high"]
    # plain loop over the same identity draws
    ids = np.unique(pq["q_pids"][v])
    draws = np.random.default_rng(7).integers(0, len(ids), size=(200, len(ids)))
    maps = []
    for row in draws:
        vals = [a for i in row for a, p, ok in zip(pq["ap"], pq["q_pids"], v) if ok and p == ids[i]]
        maps.append(sum(vals) / len(vals))
    lo, hi = np.quantile(maps, [0.05, 0.95])
    assert out["mAP"]["low"] == pytest.approx(lo) and out["mAP"]["high"] == pytest.approx(hi)
    assert out["num_ids"] == len(ids) and out["num_queries"] == int(v.sum())


def test_bootstrap_shrinks_with_more_identities_and_is_deterministic():
    rng = np.random.default_rng(4)
    small, large = fake_per_query(rng, 20), fake_per_query(rng, 800)
    w_small = bootstrap_interval(small, n_boot=300)["mAP"]
    w_large = bootstrap_interval(large, n_boot=300)["mAP"]
    assert (w_large["high"] - w_large["low"]) < 0.5 * (w_small["high"] - w_small["low"])
    assert bootstrap_interval(small, n_boot=300, seed=1) == bootstrap_interval(small, n_boot=300, seed=1)
    assert bootstrap_interval(small, n_boot=300, seed=1) != bootstrap_interval(small, n_boot=300, seed=2)


def test_paired_bootstrap():
    rng = np.random.default_rng(5)
    a = fake_per_query(rng, 40)
    same = paired_bootstrap(a, a, n_boot=200)
    for m in ("mAP", "rank1", "mINP"):
        assert same[m]["diff"] == 0.0 and same[m]["low"] == 0.0 and same[m]["high"] == 0.0
        assert same[m]["frac_a_gt_b"] == 0.0
    b = dict(a, ap=a["ap"] - 0.05)  # b uniformly worse by 0.05 AP
    res = paired_bootstrap(a, b, n_boot=200)
    assert res["mAP"]["diff"] == pytest.approx(0.05)
    assert res["mAP"]["low"] == pytest.approx(0.05) and res["mAP"]["high"] == pytest.approx(0.05)
    assert res["mAP"]["frac_a_gt_b"] == 1.0
    other = dict(a, valid=~a["valid"])
    with pytest.raises(ValueError, match="same queries"):
        paired_bootstrap(a, other)
    with pytest.raises(KeyError, match="return_per_query"):
        bootstrap_interval({"ap": a["ap"]})


def test_summarize_from_evaluate():
    dist, qp, gp, qc, gc = hand_case()
    pq = evaluate(dist, qp, gp, qc, gc, return_per_query=True)
    s = summarize(pq, n_boot=50, ranks=(1, 5))
    assert s["mAP"] == pytest.approx(100 * pq["mAP"])
    assert s["rank1"] == pytest.approx(100 * pq["cmc"][0])
    assert s["rank5"] == pytest.approx(100 * pq["cmc"][4])
    assert s["mINP_low"] <= s["mINP"] <= s["mINP_high"]
    assert s["mAP_text"].startswith(f"{s['mAP']:.1f} [")


def test_threaded_chunks_give_the_same_result_and_the_first_nan_row():
    rng = np.random.default_rng(7)
    nq, ng = 53, 211
    dist = rng.random((nq, ng)).astype(np.float32)
    dist[:, 5] = dist[:, 6]  # ties across columns
    qp, gp = rng.integers(0, 9, nq), rng.integers(0, 9, ng)
    qc, gc = rng.integers(0, 4, nq), rng.integers(0, 4, ng)
    one = evaluate(dist, qp, gp, qc, gc, return_per_query=True, chunk_size=7, threads=1)
    many = evaluate(dist, qp, gp, qc, gc, return_per_query=True, chunk_size=7, threads=3)
    assert one["mAP"] == many["mAP"] and one["mINP"] == many["mINP"]
    np.testing.assert_array_equal(one["cmc"], many["cmc"])
    for k in ("ap", "inp", "first_hit", "num_pos"):
        np.testing.assert_array_equal(one[k], many[k])
    bad = dist.copy()
    bad[40, 3] = np.nan
    bad[22, 9] = np.nan
    with pytest.raises(ValueError, match="first in query row 22"):
        evaluate(bad, qp, gp, qc, gc, chunk_size=7, threads=3)


def test_tost_hand_computed_one_degree_of_freedom():
    """diffs (0, 0.4): mean 0.2, std 0.2 * sqrt(2), se 0.2; t = 6 against -1 and 4 against +1; with one degree
    of freedom the t distribution is Cauchy: P(T > t) = 1/2 - arctan(t) / pi."""
    import math

    from deap_lib.evaluation import tost, verdict

    r = tost([0.0, 0.4], margin=1.0)
    assert r["mean"] == pytest.approx(0.2) and r["t_lower"] == pytest.approx(6.0) and r["t_upper"] == pytest.approx(4.0)
    assert r["p_lower"] == pytest.approx(0.5 - math.atan(6.0) / math.pi, rel=1e-9)
    assert r["p_upper"] == pytest.approx(0.5 - math.atan(4.0) / math.pi, rel=1e-9)  # 0.0780 > 0.05
    assert r["p"] == r["p_upper"] and r["equivalent"] == 0.0 and verdict([0.0, 0.4]) == "inconclusive"
    # 90 % interval: t_{0.95, 1} = tan(0.45 pi) = 6.3138
    assert r["ci_high"] == pytest.approx(0.2 + math.tan(0.45 * math.pi) * 0.2, rel=1e-9)


def test_tost_agrees_with_two_one_sided_scipy_tests_and_the_verdicts():
    from scipy import stats

    from deap_lib.evaluation import tost, verdict

    d = [0.2, -0.1, 0.3]
    r = tost(d, margin=1.0)
    lo = stats.ttest_1samp(d, -1.0, alternative="greater").pvalue
    hi = stats.ttest_1samp(d, 1.0, alternative="less").pvalue
    assert r["p_lower"] == pytest.approx(lo, rel=1e-9) and r["p_upper"] == pytest.approx(hi, rel=1e-9)
    assert r["equivalent"] == 1.0 and r["ci_low"] > -1.0 and r["ci_high"] < 1.0 and verdict(d) == "equivalent"
    assert verdict([-3.1, -2.8, -3.4]) == "worse" and verdict([2.0, 2.5, 1.8]) == "better"
    assert verdict([0.5, 0.5, 0.5]) == "equivalent" and verdict([1.5, 1.5]) == "better"
    with pytest.raises(ValueError, match="at least 2"):
        tost([0.1])


def test_choice_on_validation_takes_the_strongest_setting_within_the_margin():
    from deap_lib.results import choose_on_validation, verdicts_over_seeds

    probes = [{"lam": 0.003, "val_mAP": 85.0, "mAP": 70.0}, {"lam": 0.01, "val_mAP": 85.1, "mAP": 60.0},
              {"lam": 0.02, "val_mAP": 83.0, "mAP": 99.0}, {"lam": 0.03, "val_mAP": 80.7, "mAP": 99.0}]
    c = choose_on_validation(probes, reference_val=84.5)  # floor 83.5: 0.02 misses it, whatever its test mAP
    assert c["lam"] == 0.01 and c["qualifies"] and "83.50" in c["rule"]
    assert choose_on_validation(probes, reference_val=83.9)["lam"] == 0.02  # floor 82.9
    none = choose_on_validation(probes, reference_val=95.0)
    assert none["lam"] == 0.003 and not none["qualifies"]
    with pytest.raises(KeyError, match="validation mAP"):
        choose_on_validation([{"lam": 0.01, "val_mAP": None}], 80.0)
    v = verdicts_over_seeds({0: 80.2, 1: 79.9, 2: 80.3}, {0: 80.0, 1: 80.0, 2: 80.0})
    assert v["per_seed"] == pytest.approx([0.2, -0.1, 0.3]) and v["verdict"] == "equivalent"
    assert verdicts_over_seeds({0: 75.0}, {0: 80.0, 1: 81.0})["verdict"] == "one seed"


def test_arms_over_seeds_pairs_each_arm_with_the_reference_seed_by_seed(tmp_path):
    from deap_lib.evaluation import evaluate
    from deap_lib.inference import per_query_arrays
    from deap_lib.results import arms_over_seeds

    rng = np.random.default_rng(0)
    q_pids, g_pids = np.repeat(np.arange(6), 2), np.repeat(np.arange(6), 5)
    q_cams, g_cams = np.zeros(12, int), np.ones(30, int)

    def fake_run(name, noise):
        d = np.abs(q_pids[:, None] - g_pids[None, :]) + noise * rng.random((12, 30))
        res = evaluate(d, q_pids, g_pids, q_cams, g_cams, return_per_query=True)
        run_dir = tmp_path / name
        run_dir.mkdir()
        np.savez(run_dir / "per_query_absorbed.npz", **per_query_arrays(res))
        return {"run_dir": str(run_dir), "forms": {"unpruned": {"mAP": 0.0}, "absorbed": {"mAP": 100 * res["mAP"]}}}

    runs = {(arm, s): fake_run(f"{arm}-s{s}", noise) for arm, noise in (("ref", 2.0), ("worse", 9.0))
            for s in (0, 1, 2)}
    runs[("one seed", 1)] = fake_run("one-s1", 3.0)
    rows = {r["arm"]: r for r in arms_over_seeds(runs, "ref", n_boot=200)}
    assert set(rows) == {"worse", "one seed"}
    w = rows["worse"]
    diffs = [runs[("worse", s)]["forms"]["absorbed"]["mAP"] - runs[("ref", s)]["forms"]["absorbed"]["mAP"]
             for s in (0, 1, 2)]
    assert w["seeds"] == [0, 1, 2] and [p["seed"] for p in w["per_seed"]] == [0, 1, 2]
    assert [p["d_mAP"] for p in w["per_seed"]] == pytest.approx(diffs)  # the bootstrap's point estimate
    assert all(p["d_low"] <= p["d_mAP"] <= p["d_high"] for p in w["per_seed"])
    assert w["d_mean"] == pytest.approx(sum(diffs) / 3) and w["ci_low"] <= w["d_mean"] <= w["ci_high"]
    assert w["verdict"] == verdict_of(diffs)
    assert rows["one seed"]["seeds"] == [1] and rows["one seed"]["verdict"] == "one seed"
    with pytest.raises(KeyError, match="no run of the reference arm 'teacher'; arms: ref, worse, one seed"):
        arms_over_seeds(runs, "teacher")


def verdict_of(diffs):
    from deap_lib.evaluation import verdict

    return verdict(diffs)
