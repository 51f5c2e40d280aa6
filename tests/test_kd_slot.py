"""The relation-KD slot (deap_lib.losses.kd_slot): each loss that can replace ARKD, at the field's weight and in
the field's normalisation, against plain-loop references; what it reads; FitNet's regressors as the only
adaptation module; DEAP trained with another loss in the slot."""
from __future__ import annotations

import math

import pytest
import torch

from deap_lib.losses import ARKD, PKT, RKD, SimilarityPreserving
from deap_lib.losses.kd_slot import SLOT_LOSSES, RelationSlot
from deap_lib.models.output import ReIDOutput


def _out(seed, b=4, maps=((6, 4, 4), (8, 2, 2)), dim=5):
    g = torch.Generator().manual_seed(seed)
    return ReIDOutput(logits=torch.randn(b, 3, generator=g), global_feat=torch.randn(b, 8, generator=g),
                      embedding=torch.randn(b, dim, generator=g),
                      stage_maps=[torch.rand(b, *m, generator=g) for m in maps])


def _at_reference(s_maps, t_maps):
    """RepDistiller's AT by loops: per map, a(F)_i = normalise(mean_c F_c^2) over positions; the mean over
    samples and positions of (a_s - a_t)^2; summed over maps."""
    total = 0.0
    for s, t in zip(s_maps, t_maps):
        b, c, h, w = s.shape
        acc = 0.0
        for i in range(b):
            def att(f):
                v = [sum(float(f[i, k, y, x]) ** 2 for k in range(c)) / c for y in range(h) for x in range(w)]
                n = math.sqrt(sum(a * a for a in v))
                return [a / n for a in v]
            a_s, a_t = att(s), att(t)
            acc += sum((p - q) ** 2 for p, q in zip(a_s, a_t))
        total += acc / (b * h * w)
    return total


def test_attention_transfer_in_the_slot_is_the_benchmarks_normalisation_and_weight():
    s, t = _out(0), _out(1)
    got = RelationSlot("at")(s, t)
    assert got.item() == pytest.approx(1000.0 * _at_reference(s.stage_maps, t.stage_maps), rel=1e-5)
    assert RelationSlot("at", 2.0)(s, t).item() == pytest.approx(2.0 * _at_reference(s.stage_maps, t.stage_maps),
                                                                   rel=1e-5)


def test_each_loss_reads_its_inputs_at_its_weight():
    s, t = _out(0), _out(1)
    assert RelationSlot("sp")(s, t).item() == pytest.approx(3000 * SimilarityPreserving()(s.stage_maps, t.stage_maps).item())
    assert RelationSlot("pkt")(s, t).item() == pytest.approx(30000 * PKT()(s.embedding, t.embedding).item())
    assert RelationSlot("rkd")(s, t).item() == pytest.approx(RKD()(s.embedding, t.embedding).item())
    assert RelationSlot("arkd", 0.5, arkd_alpha=2.0, arkd_beta=3.0)(s, t).item() == pytest.approx(
        0.5 * ARKD(alpha=2.0, beta=3.0)(s.stage_maps, t.stage_maps).item())
    # the embedding losses do not look at the maps, the map losses not at the embedding
    s2 = _out(0)
    s2.stage_maps = [m + 1.0 for m in s2.stage_maps]
    assert RelationSlot("pkt")(s2, t).item() == RelationSlot("pkt")(s, t).item()
    s3 = _out(0)
    s3.embedding = s3.embedding * 3.0 + 1.0
    assert RelationSlot("sp")(s3, t).item() == RelationSlot("sp")(s, t).item()
    assert not RelationSlot("none").active() and RelationSlot("none").adaptation_parameters() == 0
    assert SLOT_LOSSES["fitnet"].weight == 100.0 and SLOT_LOSSES["at"].weight == 1000.0
    with pytest.raises(ValueError, match="unknown 'crd'; valid: arkd, at, sp, fitnet, rkd, pkt, none"):
        RelationSlot("crd")


def test_fitnet_regresses_each_map_with_its_own_trained_module():
    s, t = _out(0), _out(1)
    slot = RelationSlot("fitnet", map_channels=[(6, 6), (8, 8)])
    # two 1x1 conv (weight + bias) + BN (weight + bias) regressors: the only adaptation parameters
    assert slot.adaptation_parameters() == (6 * 6 + 6 + 2 * 6) + (8 * 8 + 8 + 2 * 8)
    assert RelationSlot("at").adaptation_parameters() == 0 and RelationSlot("arkd").adaptation_parameters() == 0
    slot.train()
    ref = 0.0
    for reg, a, b in zip(slot.loss.regressor, s.stage_maps, t.stage_maps):
        ref += float(((reg(a) - b) ** 2).mean().detach())
    assert slot(s, t).item() == pytest.approx(100.0 * ref, rel=1e-6)
    slot(s, t).backward()
    assert all(p.grad is not None for p in slot.parameters())
    with pytest.raises(ValueError, match="needs the stage maps' channels"):
        RelationSlot("fitnet")


def test_deap_with_another_loss_in_the_slot_trains_it_and_its_regressors(tmp_path):
    from deap_lib.methods import UserError, get_preset, run

    root = str(tmp_path / "data")
    run(get_preset("quick", "teacher", **{"data.root": root, "optim.epochs": 2}), tmp_path / "t", progress=False)
    ov = {"data.root": root, "teacher_path": str(tmp_path / "t" / "model.pt"), "optim.epochs": 2}
    fit = {"loss.relation": "fitnet", "loss.relation_weight": 1e-6}  # the 2-epoch quick teacher's maps are huge
    m = run(get_preset("quick", "deap", **ov, **fit), tmp_path / "fit", progress=False)
    log = (tmp_path / "fit" / "train_log.csv").read_text().splitlines()[0].split(",")
    assert "loss_fitnet" in log and "loss_arkd" not in log
    state = torch.load(tmp_path / "fit" / "last.pt", weights_only=False)["model"]
    regs = [k for k in state if k.startswith("relation.loss.regressor.")]
    assert len(regs) >= 8  # two regressors: conv weight/bias, BN weight/bias/stats, checkpointed
    # trained: the student's SGD holds them in group "adaptation" and has stepped them (momentum buffers)
    opt = torch.load(tmp_path / "fit" / "last.pt", weights_only=False)["optimizer"]
    assert [g["name"] for g in opt["param_groups"]] == ["base", "head", "adaptation"]
    ids = opt["param_groups"][2]["params"]
    assert len(ids) == 8 and all(opt["state"][i]["momentum_buffer"].abs().sum() > 0 for i in ids)
    assert {"unpruned", "absorbed"} <= set(m["forms"])
    with pytest.raises(UserError, match="loss.relation: unknown 'crd'"):
        run(get_preset("quick", "deap", **ov, **{"loss.relation": "crd"}), tmp_path / "bad", progress=False)
