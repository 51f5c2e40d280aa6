"""MobileNetV2 backbone: the same function as torchvision's ``mobilenet_v2`` features (weights copied over), its
inverted residuals cut and absorbed exactly by the library's one pruning path (BN gates of the hidden
channels), and clear errors."""
from __future__ import annotations

import copy

import pytest
import torch
import torchvision

from deap_lib.absorb import absorb, to_deploy
from deap_lib.complexity import profile
from deap_lib.models import MODELS, build_model
from deap_lib.models.mobilenet import InvertedResidual, make_divisible
from test_absorb import _randomise as _randomise_bn  # random BN statistics and affine


@pytest.mark.parametrize("width", [1.0, 0.5])
def test_same_function_as_torchvision_mobilenet_v2(width):
    torch.manual_seed(0)
    tv = torchvision.models.mobilenet_v2(weights=None, width_mult=width).features.eval()
    ours = _randomise_bn(build_model("mobilenet_v2", 10, width=width, last_stride=2, embed_dim=16)).eval()
    src = list(ours.backbone.state_dict().items())
    dst = tv.state_dict()
    assert len(src) == len(dst)
    for (k_src, v), k in zip(src, dst):  # the same tensors in the same order
        assert v.shape == dst[k].shape, (k_src, k)
        dst[k] = v.clone()
    tv.load_state_dict(dst, strict=True)
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        ref = tv(x)
        s3, s4, _ = ours.backbone(x)
    assert s4.shape == ref.shape and torch.allclose(s4, ref, rtol=1e-4, atol=1e-5)
    assert s3.shape[1] == make_divisible(96 * width) and s3.shape[-2:] == (6, 4)  # the c = 96 group, stride 16
    assert sum(p.numel() for p in ours.backbone.parameters()) == sum(p.numel() for p in tv.parameters())


def test_reid_outputs_last_stride_and_widths():
    net = build_model("mobilenet_v2", 10, width=0.25, last_stride=1, embed_dim=16).train()
    out = net.forward_features(torch.randn(2, 3, 64, 64))
    assert len(out.block_feats) == 17 and out.stage_maps[1].shape[-2:] == (4, 4)  # stride 16 with last stride 1
    assert out.embedding.shape == (2, 16) and out.logits.shape == (2, 10)
    widths = net.block_widths()
    assert widths[0] == () and widths[1] == (make_divisible(16 * 0.25) * 6,)
    assert "mobilenet_v2" in MODELS.names()


def test_hidden_channels_cut_and_absorbed_exactly():
    """BN gates of the hidden channels -> MACs-budget selection -> cut -> absorb, against the gated network
    with the dropped channels zeroed (float64)."""
    from deap_lib.compression import select_and_prune
    from deap_lib.pruning import apply_masks, group_scores, top_fraction_masks

    torch.manual_seed(0)
    model = _randomise_bn(build_model("mobilenet_v2", 7, width=0.5, embed_dim=16)).double().eval()
    scores = group_scores(model)
    assert [len(s) for s in scores] == [0] + [1] * 16  # the t = 1 block has no prunable width
    size = (3, 64, 64)
    pruned, rule = select_and_prune(model, scores, threshold=0.0, target_macs=0.6, input_size=size,
                                    allocation="uniform")
    masks = top_fraction_masks(scores, rule["keep_fraction"])
    reference = apply_masks(model, masks).eval()
    x = torch.randn(3, *size, dtype=torch.float64)
    with torch.no_grad():
        ref = reference(x)
        assert (pruned.eval()(x) - ref).abs().max().item() <= 1e-10 * ref.abs().max().item()
    deploy, report = absorb(pruned, threshold=0.0, input_size=size, profile=False)
    assert report.verification["max_rel"] < 1e-10
    with torch.no_grad():
        assert (deploy(x) - ref).abs().max().item() <= 1e-10 * ref.abs().max().item()
    assert rule["achieved_macs_fraction"] <= 0.6
    assert profile(copy.deepcopy(deploy).float(), size)["macs"] <= 0.6 * profile(copy.deepcopy(model).float(), size)["macs"]
    assert isinstance(deploy.backbone.blocks[1], InvertedResidual) and deploy.backbone.blocks[1].project.deploy
    # unpruned BN folding is exact too
    folded = to_deploy(model)
    with torch.no_grad():
        assert (folded(x) - model(x)).abs().max().item() <= 1e-10 * model(x).abs().max().item()


def test_bad_structures_are_clear_errors():
    with pytest.raises(ValueError, match="mobilenet_v2 has no PCP units"):
        build_model("mobilenet_v2", 5, pcp="deap")
    with pytest.raises(ValueError, match="expansion 1 has no prunable width"):
        InvertedResidual(16, 16, 1, 1, widths=(4,))
    with pytest.raises(ValueError, match="one entry per block \\(17 blocks\\)"):
        build_model("mobilenet_v2", 5, widths=[(8,)] * 3)


def test_mobilenet_trains_and_is_cut_to_budget_through_the_cli(tmp_path):
    """The quick teacher and a BN-gated pruning run (kd_np_direct, 60 % of the MACs) on MobileNetV2."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["--preset", "quick", "--data", str(tmp_path / "data"), "--set", "data.synthetic=tiny", "--set",
              "model.arch=mobilenet_v2", "--set", "model.width=0.25", "--no-progress", "--threads", "1"]
    for method, out, extra in (("teacher", "t", []),
                               ("kd_np_direct", "s", ["--teacher", str(tmp_path / "t" / "model.pt"), "--set",
                                                      "prune.target_macs=0.6"])):
        p = subprocess.run([sys.executable, "-m", "deap_lib", "train", "--method", method, *common, *extra,
                            "--out", str(tmp_path / out)], cwd=repo, env=env, capture_output=True, text=True,
                           timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
    m = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert m["config"]["model"]["arch"] == "mobilenet_v2" and {"unpruned", "pruned", "absorbed"} <= set(m["forms"])
    assert m["forms"]["absorbed"]["macs"] <= 0.6 * m["forms"]["unpruned"]["macs"] + 1
    assert m["absorb_verification"]["max_rel"] < 1e-6
