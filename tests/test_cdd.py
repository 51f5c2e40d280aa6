"""CDD: the vectorised gradient resetting against a plain loop over samples and neighbours (docs/methods/cdd.rst §Gradient resetting), the
bank's FIFO, the clear errors, and a quick run (three forms, absorbed exact, masks growing) killed with SIGKILL
during the resetting phase and resumed bit-exactly (banks and masks included).

This file is also the plugin of its kill test: ``cdd_killable`` is ``cdd`` that SIGKILLs itself at the end of
the epoch named by an environment variable (before that epoch's checkpoint).
"""
from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pandas as pd
import pytest
import torch

from deap_lib.methods import METHODS, get_preset
from deap_lib.methods.cdd import CDD
from deap_lib.resetting import GradientResetting, group_lasso_subgradient, low_contribution_channels, neighbours

HERE = str(Path(__file__).resolve())
DIE_AT_ENV = "CDD_DIE_AT_EPOCH"


class KillableCDD(CDD):
    name = "cdd_killable"

    def end_epoch(self, epoch):
        if os.environ.get(DIE_AT_ENV) == str(epoch):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().end_epoch(epoch)


if __name__.startswith("deap_plugin_"):
    METHODS.register("cdd_killable", KillableCDD)


# ------------------------------------------------------------------------------------ loop references
def ref_neighbours(t, g, k, distance):
    """Per sample: all gallery rows ranked by a Python sort (stable: equal scores keep the lower index)."""
    out = []
    for i in range(t.shape[0]):
        if distance == "cosine":
            ti = t[i].double() / t[i].double().norm()
            score = [-float(ti @ (g[j].double() / g[j].double().norm())) for j in range(g.shape[0])]
        else:
            score = [float((t[i].double() - g[j].double()).norm()) for j in range(g.shape[0])]
        out.append(sorted(range(g.shape[0]), key=lambda j: score[j])[:k])
    return out


def ref_candidates(s, t, g, k, ratio, distance):
    c = s.shape[1]
    m = int(ratio * c)
    cand = set(range(c))
    if m == 0:
        return torch.zeros(c, dtype=torch.bool)
    for i, nbrs in enumerate(ref_neighbours(t, g, k, distance)):
        si = s[i].double()
        if distance == "cosine":
            si = si / si.norm()
        for n in nbrs:
            gn = g[n].double()
            if distance == "cosine":
                gn = gn / gn.norm()
            e = [abs(float(gn[ch] * si[ch])) for ch in range(c)]
            low = sorted(range(c), key=lambda ch: e[ch])[:m]
            cand &= set(low)
    mask = torch.zeros(c, dtype=torch.bool)
    mask[sorted(cand)] = True
    return mask


def ref_reset_gradient(w, grad, mask, lam):
    out = grad.clone()
    for o in range(w.shape[0]):
        row = w[o].flatten()
        sub = lam * row / row.norm() if float(row.norm()) > 0 else torch.zeros_like(row)
        out[o] = (grad[o].flatten() * mask[o] + sub).reshape(out[o].shape)
    return out


# ------------------------------------------------------------------------------------ selection
@pytest.mark.parametrize("distance", ["cosine", "l2"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_selection_equals_the_loop_on_random_tensors(distance, seed):
    g = torch.Generator().manual_seed(seed)
    b, c, n = 6, 12, 20
    t = torch.randn(b, c, generator=g)
    gallery = torch.cat([t, torch.randn(n - b, c, generator=g)])  # the batch is in the gallery
    # students close to their teachers, so the low-contribution sets overlap and the intersection is not empty
    s = t + 0.05 * torch.randn(b, c, generator=g)
    s[:, :3] *= 0.01  # three channels that contribute little for everyone
    for k in (1, 2, 3):
        assert neighbours(t, gallery, k, distance).tolist() == ref_neighbours(t, gallery, k, distance)
        for ratio in (0.25, 0.5, 0.75):
            got = low_contribution_channels(s, t, gallery, k=k, ratio=ratio, distance=distance)
            assert torch.equal(got, ref_candidates(s, t, gallery, k, ratio, distance)), (k, ratio)
    u = low_contribution_channels(s, t, gallery, k=2, ratio=0.5, distance=distance)
    assert u[:3].any() and 0 < int(u.sum()) < c  # the test is not vacuous


def test_ties_go_to_the_lower_index_in_both_sorts():
    # entries in {0, +-1} with four non-zeros: norms 2, every normalised value and dot product exact, so
    # similarities and contributions tie exactly (duplicated gallery rows, zero channels)
    t = torch.tensor([[1., 1., 1., 1., 0., 0., 0., 0.],
                      [0., 0., 1., 1., 1., 1., 0., 0.]])
    gallery = torch.cat([t, t, t[:1], torch.tensor([[1., -1., 1., -1., 0., 0., 0., 0.]])])  # rows 0=2=4, 1=3
    s = torch.tensor([[1., 1., 1., 1., 0., 0., 0., 0.],
                      [0., 0., 1., 1., 1., 1., 0., 0.]])
    assert neighbours(t, gallery, 3, "cosine").tolist() == [[0, 2, 4], [1, 3, 0]]
    assert ref_neighbours(t, gallery, 3, "cosine") == [[0, 2, 4], [1, 3, 0]]
    for k in (1, 2, 3):
        for ratio in (0.25, 0.5, 0.6):
            got = low_contribution_channels(s, t, gallery, k=k, ratio=ratio, distance="cosine")
            assert torch.equal(got, ref_candidates(s, t, gallery, k, ratio, "cosine")), (k, ratio)
    # k = 1, r = 0.5: sample 0's four zero contributions are channels 4-7, sample 1's channels 0, 1, 6, 7
    assert low_contribution_channels(s, t, gallery, k=1, ratio=0.5).nonzero().flatten().tolist() == [6, 7]


def test_a_block_where_nothing_is_masked():
    g = torch.Generator().manual_seed(3)
    t = torch.randn(4, 8, generator=g)
    # disjoint low sets: sample i's weakest channels are its own pair, so the intersection is empty
    s = torch.ones(4, 8)
    for i in range(4):
        s[i, 2 * i: 2 * i + 2] = 1e-3
    got = low_contribution_channels(s, t, t, k=1, ratio=0.25)
    assert not got.any() and torch.equal(got, ref_candidates(s, t, t, 1, 0.25, "cosine"))
    assert not low_contribution_channels(s, t, t, k=2, ratio=0.1).any()  # floor(0.1 * 8) = 0 channels


def test_gradient_reset_equals_the_loop_and_masks_accumulate():
    g = torch.Generator().manual_seed(5)
    grg = GradientResetting([6, 4], capacity=8, batch_size=2, k=2, ratio=0.5)
    ws = [torch.randn(6, 6, 1, 1, generator=g, requires_grad=True), torch.randn(4, 5, 1, 1, generator=g,
                                                                                   requires_grad=True)]
    with torch.no_grad():
        ws[1][2].zero_()  # an exactly zero row: subgradient 0, not NaN
    grg.mask0[[1, 4]] = 0.0
    grg.mask1[2] = 0.0
    grads = [torch.randn(w.shape, generator=g) for w in ws]
    for w, gr in zip(ws, grads):
        w.grad = gr.clone()
    grg.reset_gradients_(ws, 0.004)
    for w, gr, m in zip(ws, grads, grg.masks()):
        assert torch.allclose(w.grad, ref_reset_gradient(w.detach(), gr, m, 0.004), atol=1e-6, rtol=0)
    assert torch.isfinite(ws[1].grad).all()
    assert torch.allclose(ws[0].grad[1], group_lasso_subgradient(ws[0], 0.004)[1], atol=1e-7)

    # masks only accumulate: a second update never unmasks, and candidates are ANDed into the masks
    before = [m.clone() for m in grg.masks()]
    s = [torch.randn(2, 6, generator=g), torch.randn(2, 4, generator=g)]
    t = [torch.randn(2, 6, generator=g), torch.randn(2, 4, generator=g)]
    grg.update_(s, t)
    for m0, m1, si, ti, bank in zip(before, grg.masks(), s, t, grg.banks()):
        u = low_contribution_channels(si, ti, bank[:2], k=2, ratio=0.5)
        assert torch.equal(m1, m0 * (~u).float())


def test_bank_is_a_fifo_of_the_last_capacity_rows():
    grg = GradientResetting([3], capacity=6, batch_size=2, k=1, ratio=0.5)
    rows = torch.arange(30, dtype=torch.float32).reshape(10, 3)
    for i in range(0, 10, 2):
        grg.enqueue_([rows[i:i + 2]])
        assert int(grg.filled) == min(i + 2, 6)
    # after 5 batches of 2 in 6 slots: slots hold rows 6-9 then 4-5 (ring order), pointer at slot 4
    assert int(grg.ptr) == 4
    assert torch.equal(grg.bank0, torch.cat([rows[6:10], rows[4:6]]))


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match=r"args.bank_size must be a positive multiple of the batch size \(32\), got 100"):
        GradientResetting([4], capacity=100, batch_size=32)
    for r in (0.0, 1.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=r"args.mask_ratio must lie in \(0, 1\)"):
            GradientResetting([4], capacity=64, batch_size=32, ratio=r)
    with pytest.raises(ValueError, match="args.mask_distance must be one of"):
        GradientResetting([4], capacity=64, batch_size=32, distance="dot")
    t = torch.randn(2, 4)
    with pytest.raises(ValueError, match="k = 3 neighbours asked from a gallery of 2 filled rows"):
        low_contribution_channels(t, t, t, k=3, ratio=0.5)


# ------------------------------------------------------------------------------------ training
def cli(*args, env=None, check=True):
    from cli_helpers import deap_cli  # (not at import: the CLI loads this file as a plugin)

    return deap_cli(HERE, *args, env=env, check=check)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from cli_helpers import quick_teacher

    return quick_teacher(HERE, tmp_path_factory.mktemp("cdd"))


def cdd_args(method, data, teacher_path, out, *extra):
    return ["train", "--method", method, "--preset", "quick", "--data", data, "--set", "data.synthetic=tiny",
            "--teacher", teacher_path, "--out", str(out), "--epochs", "4", "--set", "prune.target_macs=0.6",
            "--set", "args.bank_size=64", "--no-progress", "--threads", "1", *extra]  # killable: no preset entry


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_cdd_trains_with_growing_masks_and_resumes_bit_exactly_after_sigkill(teacher):
    root, data, tpath = teacher
    ref, killed = root / "cdd_ref", root / "cdd_killed"
    cli(*cdd_args("cdd", data, tpath, ref))
    m = json.loads((ref / "metrics.json").read_text())
    assert {"unpruned", "pruned", "absorbed"} <= set(m["forms"])
    assert m["absorb_verification"]["max_rel"] < 1e-6  # absorbed == pruned, float64
    assert m["forms"]["absorbed"]["macs"] <= 0.6 * m["forms"]["unpruned"]["macs"] + 1
    log = pd.read_csv(ref / "train_log.csv")
    # lasso as a loss term in epoch 1 only (round(4 / 6) = 1), gradient resetting afterwards
    assert log["loss_lasso"].notna().tolist() == [True, False, False, False]
    assert log["masked_frac"].iloc[0] == 0.0 and log["masked_frac"].is_monotonic_increasing
    assert log["masked_frac"].iloc[-1] > 0.0

    # SIGKILL at the end of epoch 3 (resetting phase; the last checkpoint is epoch 2's, banks filled)
    p = cli(*cdd_args("cdd_killable", data, tpath, killed), env={DIE_AT_ENV: "3"}, check=False)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr[-2000:])
    mid = _load(killed / "last.pt")
    assert mid["epoch"] == 2 and int(mid["model"]["grg.filled"]) > 0
    cli(*cdd_args("cdd_killable", data, tpath, killed, "--resume"))
    a, b = _load(ref / "last.pt"), _load(killed / "last.pt")
    assert a["epoch"] == b["epoch"] == 4 and set(a["model"]) == set(b["model"])
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert {"grg.bank0", "grg.mask0", "grg.ptr", "grg.filled"} <= set(a["model"])
    mb = json.loads((killed / "metrics.json").read_text())
    for form in m["forms"]:
        assert m["forms"][form]["mAP"] == mb["forms"][form]["mAP"], form


def test_cdd_config_errors_name_the_key(teacher, tmp_path):
    root, data, tpath = teacher
    for key, value, msg in (("args.bank_size", "60", "args.bank_size must be a positive multiple of the batch size (8)"),
                            ("args.mask_ratio", "1.5", "args.mask_ratio must lie in (0, 1)"),
                            ("args.mask_k", "0", "args.mask_k must be >= 1")):
        p = cli(*cdd_args("cdd", data, tpath, tmp_path / key, "--set", f"{key}={value}"), check=False)
        assert p.returncode == 2 and msg in p.stderr, (key, p.stderr[-1000:])


def test_paper_preset_follows_the_release():
    cfg = get_preset("paper", "cdd")
    assert (cfg.optim.epochs, cfg.loss.triplet_margin, cfg.prune.threshold) == (120, 0.35, 1e-5)
    assert cfg.model.input_size == (256, 256) and cfg.model.arch == "resnet101"
    assert get_preset("paper", "cdd", **{"data.dataset": "msmt17"}).model.input_size == (320, 160)
    assert CDD.Args().bank_size % (cfg.data.ids_per_batch * cfg.data.num_instances) == 0  # 24,000 = 250 x 96
    assert math.isclose(cfg.optim.flat_frac, 40 / 120)
