"""Resolution-aware KD (``crkd``, docs/methods/crkd.rst): the CRKD terms against plain references and hand-computed cases,
the paired HR / LR views, the discriminator's alternating step, the clear errors, and a quick run killed with
SIGKILL and resumed bit-exactly (discriminator and its Adam included).

This file is also the plugin of its kill test: ``crkd_killable`` is ``crkd`` that SIGKILLs itself at the end of
the epoch named by an environment variable (before that epoch's checkpoint).
"""
from __future__ import annotations

import itertools
import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from deap_lib.data.loaders import build_train_loader
from deap_lib.losses.cross_resolution import (embedding_l2, median_bandwidth, mmd2_unbiased,
                                              pairwise_similarity_loss, resolution_temperature)
from deap_lib.methods import METHODS, get_preset
from deap_lib.methods.base import UserError
from deap_lib.methods.crkd import CrossResolutionKD
from deap_lib.models import build_model
from deap_lib.resolution import check_feature_maps, is_paired, lr_size, scale_of

HERE = str(Path(__file__).resolve())
DIE_AT_ENV = "CRKD_DIE_AT_EPOCH"


class KillableCRKD(CrossResolutionKD):
    name = "crkd_killable"

    def end_epoch(self, epoch):
        if os.environ.get(DIE_AT_ENV) == str(epoch):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().end_epoch(epoch)


if __name__.startswith("deap_plugin_"):
    METHODS.register("crkd_killable", KillableCRKD)


# ------------------------------------------------------------------------------------ the CRKD terms
def ref_mmd2(x, y, sigmas):
    """Gretton et al.'s unbiased MMD^2 U-statistic by a double loop over sample pairs."""
    n = len(x)

    def k(a, b):
        d2 = float(((a - b) ** 2).sum())
        return sum(math.exp(-d2 / (2 * s * s)) for s in sigmas)

    total = 0.0
    for i, j in itertools.product(range(n), range(n)):
        if i != j:
            total += k(x[i], x[j]) + k(y[i], y[j]) - k(x[i], y[j]) - k(x[j], y[i])
    return total / (n * (n - 1))


@pytest.mark.parametrize("seed", [0, 1])
def test_mmd_equals_the_double_loop_and_is_zero_for_identical_batches(seed):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(7, 5, generator=g, dtype=torch.float64) + 0.7
    z = torch.cat([x, y])
    dists = sorted(float((z[i] - z[j]).norm()) for i in range(14) for j in range(14) if i != j)
    med = (dists[len(dists) // 2 - 1])  # torch.median: the lower of the two middle values
    assert float(median_bandwidth(x, y)) == pytest.approx(med, rel=1e-6)
    sig = [med * m for m in (0.25, 0.5, 1, 2, 4)]
    assert float(mmd2_unbiased(x, y, sig)) == pytest.approx(ref_mmd2(x, y, sig), rel=1e-5, abs=1e-9)
    assert float(mmd2_unbiased(x, y)) == pytest.approx(ref_mmd2(x, y, sig), rel=1e-4)  # median default
    assert float(mmd2_unbiased(x, x.clone())) == 0.0
    assert float(mmd2_unbiased(x, y)) > 0.01  # shifted distributions: clearly positive


def test_pairwise_and_embedding_terms_on_a_hand_computed_case():
    # teacher rows e1, e2; student rows e1, (e1 + e2)/sqrt 2 after normalisation
    t = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    c = 1 / math.sqrt(2)
    # S_st = [[1, 0], [c, c]], S_tt = I  ->  squared differences 0, 0, c^2, (c - 1)^2 over 4 entries
    assert float(pairwise_similarity_loss(s, t)) == pytest.approx((c ** 2 + (c - 1) ** 2) / 4, rel=1e-6)
    # ||n(s_i) - n(t_i)||^2: 0 and (c - 0)^2 + (c - 1)^2 = 2 - 2c, mean over 2
    assert float(embedding_l2(s, t)) == pytest.approx((2 - 2 * c) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        pairwise_similarity_loss(s, torch.zeros(2, 3))


def test_temperature_grows_with_the_resolution_gap():
    assert resolution_temperature(2.0, 0.5) == 4.0
    assert resolution_temperature(2.0, 0.375) == pytest.approx(16 / 3)
    assert resolution_temperature(2.0, 1.0) == 2.0
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"scale must be in \(0, 1\]"):
            resolution_temperature(2.0, bad)
    assert scale_of((32, 16), (64, 32)) == 0.5 and lr_size((64, 64), 3 / 8) == (24, 24)


# ------------------------------------------------------------------------------------ paired views
@pytest.fixture()
def noise_items(tmp_path):
    import numpy as np
    from PIL import Image

    rng, items = np.random.default_rng(0), []
    for p in range(4):
        for i in range(3):
            path = tmp_path / f"{p:04d}_c{i + 1:03d}_{i:08d}_0.png"
            Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(path)
            items.append((str(path), p, i))
    return items


def test_lr_view_is_the_antialiased_resize_of_the_augmented_hr_view(noise_items):
    from deap_lib.data.transforms import TransformConfig

    tcfg = TransformConfig(size=(32, 32), pad=2, erase_p=0.5)
    kw = dict(batch_size=8, num_instances=2, transform_cfg=tcfg, seed=3)
    plain = next(iter(build_train_loader(noise_items, **kw)))
    paired = next(iter(build_train_loader(noise_items, lr_size=(16, 12), **kw)))
    lr, hr = paired[0], paired[4]
    assert lr.shape == (8, 3, 16, 12) and hr.shape == (8, 3, 32, 32)
    assert torch.equal(hr, plain[0])  # the HR view is the ordinary augmentation, drawn once
    assert torch.equal(paired[1], plain[1])
    ref = torch.stack([TF.resize(h, [16, 12], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
                       for h in hr])
    assert torch.allclose(lr, ref, atol=1e-6)


def test_paired_config_and_size_errors():
    cfg = get_preset("quick", "crkd", **{"model.input_size": (16, 16), "data.hr_size": (32, 32)})
    assert is_paired(cfg) and not is_paired(get_preset("quick", "crkd"))
    assert get_preset("quick", "crkd", **{"data.hr_size": "32,32"}).data.hr_size == (32, 32)
    with pytest.raises(ValueError, match="gives an input of 0x0.*smallest usable scale"):
        lr_size((64, 64), 0.005)
    with pytest.raises(ValueError, match=r"scale must be in \(0, 1\]"):
        lr_size((64, 64), 0)
    net = build_model("resnet50", 5, width=0.0625, embed_dim=16)
    assert check_feature_maps(net, (24, 24)) == [(2, 2), (2, 2)]  # stages 3 and 4, last stride 1
    with pytest.raises(ValueError, match="feature map is empty"):
        check_feature_maps(net, (0, 8))


# ------------------------------------------------------------------------------------ the method
def _method(**args):
    cfg = get_preset("quick", "crkd", **{"model.input_size": (16, 16), "data.hr_size": (32, 32),
                                         **{f"args.{k}": v for k, v in args.items()}})
    torch.manual_seed(0)
    student = build_model("resnet50", 5, width=0.0625, embed_dim=16)
    teacher = build_model("resnet50", 5, width=0.0625, embed_dim=16).eval()
    return CrossResolutionKD(cfg, student, teacher)


def _batch():
    g = torch.Generator().manual_seed(1)
    hr = torch.randn(8, 3, 32, 32, generator=g)
    return (F.interpolate(hr, size=(16, 16), mode="bilinear", antialias=True), torch.arange(8) % 4,
            torch.zeros(8, dtype=torch.long), torch.arange(8), hr)


def test_adversarial_gradient_reaches_only_the_student_and_d_step_changes_only_d():
    m = _method()
    assert m.T == 4.0  # T0 = 2 at s = 1/2
    terms = m.forward_train(_batch())
    assert {"ce", "triplet", "kl", "embed", "pairwise", "mmd", "adv"} <= set(terms)
    terms["adv"].backward()
    assert all(p.grad is None for p in m.disc.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.student.parameters())
    assert all(p.grad is None for p in m.teacher.parameters())

    m.zero_grad(set_to_none=True)
    before_s = {k: v.clone() for k, v in m.student.state_dict().items()}
    before_d = {k: v.clone() for k, v in m.disc.state_dict().items()}
    disc_spec = m.configure_optimizers()[1]
    assert disc_spec.name == "disc"
    disc_spec.step_fn(None)["bce"].backward()
    disc_spec.optimizer.step()
    assert all(p.grad is None for p in m.student.parameters())
    assert all(torch.equal(before_s[k], v) for k, v in m.student.state_dict().items())
    assert all(not torch.equal(before_d[k], v) for k, v in m.disc.state_dict().items())


def test_switches_drop_terms_and_bad_settings_are_clear():
    m = _method(mmd=0.0, pairwise=0.0, discriminator=False, temperature="fixed")
    terms = m.forward_train(_batch())
    assert "mmd" not in terms and "pairwise" not in terms and "adv" not in terms and m.disc is None
    assert m.T == 2.0 and len(m.configure_optimizers()) == 1
    with pytest.raises(UserError, match="args.temperature must be one of"):
        _method(temperature="hot")
    with pytest.raises(UserError, match="args.mmd must be >= 0"):
        _method(mmd=-1.0)
    cfg = get_preset("quick", "crkd", **{"model.input_size": (16, 16), "data.hr_size": (32, 32)})
    s, t = build_model("resnet50", 5, width=0.0625, embed_dim=16), build_model("resnet50", 5, width=0.0625, embed_dim=32)
    with pytest.raises(UserError, match="student's has 16 dimensions.*teacher's.*32"):
        CrossResolutionKD(cfg, s, t)


# ------------------------------------------------------------------------------------ CLI: train, kill, resume
def cli(*args, env=None, check=True):
    from cli_helpers import deap_cli  # (not at import: the CLI loads this file as a plugin)

    return deap_cli(HERE, *args, env=env, check=check)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from cli_helpers import quick_teacher

    return quick_teacher(HERE, tmp_path_factory.mktemp("crkd"))


def crkd_args(method, data, teacher_path, out, *extra):
    return ["train", "--method", method, "--preset", "quick", "--data", data, "--set", "data.synthetic=tiny",
            "--teacher", teacher_path, "--out", str(out), "--epochs", "3", "--set", "model.input_size=16,16",
            "--set", "data.hr_size=32,32", "--no-progress", "--threads", "1", *extra]


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_crkd_trains_at_lr_and_resumes_bit_exactly_after_sigkill(teacher):
    root, data, tpath = teacher
    ref, killed = root / "crkd_ref", root / "crkd_killed"
    cli(*crkd_args("crkd", data, tpath, ref))
    m = json.loads((ref / "metrics.json").read_text())
    assert set(m["forms"]) == {"student"}
    t = json.loads((root / "teacher" / "metrics.json").read_text())
    # the same network at half the side: a quarter of the MACs, up to the head's fixed cost
    assert 0.2 < m["forms"]["student"]["macs"] / t["forms"]["teacher"]["macs"] < 0.3

    p = cli(*crkd_args("crkd_killable", data, tpath, killed), env={DIE_AT_ENV: "2"}, check=False)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr[-2000:])
    mid = _load(killed / "last.pt")
    assert mid["epoch"] == 1
    cli(*crkd_args("crkd_killable", data, tpath, killed, "--resume"))
    a, b = _load(ref / "last.pt"), _load(killed / "last.pt")
    assert a["epoch"] == b["epoch"] == 3 and set(a["model"]) == set(b["model"])
    assert any(k.startswith("disc.") for k in a["model"])
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    opt_a = a["extra_optimizers"]["disc"]["optimizer"]["state"]
    opt_b = b["extra_optimizers"]["disc"]["optimizer"]["state"]
    assert opt_a and set(opt_a) == set(opt_b)
    for i in opt_a:
        for k in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(opt_a[i][k], opt_b[i][k])
    mb = json.loads((killed / "metrics.json").read_text())
    assert m["forms"]["student"]["mAP"] == mb["forms"]["student"]["mAP"]


def test_a_teacher_at_another_resolution_is_refused(teacher, tmp_path):
    root, data, tpath = teacher
    p = cli(*crkd_args("crkd", data, tpath, tmp_path / "x"), "--set", "data.hr_size=48,48", check=False)
    assert p.returncode == 2
    assert "trained at input (32, 32), the run's HR input (data.hr_size) is (48, 48)" in p.stderr, p.stderr[-1500:]
