"""Compact save/load, TorchScript and ONNX export of deploy models (deap_lib.export)."""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from deap_lib.absorb import absorb, prune
from deap_lib.export import export_onnx, export_torchscript, load_compact, run_onnx, save_compact
from deap_lib.models import build_model




def _student(arch="resnet50", pcp="deap", seed=0):
    """A narrow PCP student with random BN statistics and half of each pruner's channels zeroed."""
    torch.manual_seed(seed)
    model = build_model(arch, 7, width=0.125, pcp=pcp, embed_dim=32)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                m.running_mean.copy_(0.2 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
        for blk in model.pcp_blocks():
            for p in (blk.pruner1, blk.pruner2, blk.compactor):
                if p is not None:
                    p.weight.add_(0.1 * torch.randn(p.weight.shape, generator=g))
            post = blk.pruner2 if blk.pruner2 is not None else blk.compactor
            post.weight[::2] = 0.0
            if blk.pruner1 is not None:
                blk.pruner1.weight[:, 1::3] = 0.0
    return model.eval()


@pytest.mark.parametrize("arch,pcp", [("resnet50", "deap"), ("resnet18", "cdd")])
def test_compact_round_trip_pruned_and_absorbed(tmp_path, arch, pcp):
    model = _student(arch, pcp)
    pruned = prune(model).eval()
    absorbed, _ = absorb(model, profile=False, input_size=(3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    for name, net in [("pruned", pruned), ("absorbed", absorbed)]:
        path = tmp_path / f"{name}.pt"
        assert save_compact(net, str(path)) == str(path)
        assert sorted(os.listdir(tmp_path)) == sorted(f for f in os.listdir(tmp_path) if not f.startswith(".tmp"))
        raw = torch.load(path, weights_only=True)  # plain dict: no pickled modules
        assert raw["config"]["widths"] == [list(w) for w in net.block_widths()]
        loaded = load_compact(str(path))
        assert not loaded.training
        assert loaded.config == net.config
        assert loaded.block_widths() == net.block_widths()
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)
    assert absorbed.config["deploy"] and pruned.config["pcp"] == pcp


def test_load_compact_errors(tmp_path):
    net = _student("resnet18", "deap")
    path = tmp_path / "m.pt"
    save_compact(net, str(path))
    raw = torch.load(path, weights_only=True)

    bad = dict(raw, state_dict={k: v for k, v in raw["state_dict"].items() if k != "head.fc.weight"})
    p = tmp_path / "missing.pt"
    torch.save(bad, p)
    with pytest.raises(ValueError, match=r"missing\.pt.*missing keys \['head\.fc\.weight'\]"):
        load_compact(str(p))

    sd = dict(raw["state_dict"])
    sd["backbone.stage1.0.pruner2.weight"] = torch.zeros(3, 8, 1, 1)
    p = tmp_path / "shape.pt"
    torch.save(dict(raw, state_dict=sd), p)
    with pytest.raises(ValueError, match=r"backbone\.stage1\.0\.pruner2\.weight: file \(3, 8, 1, 1\)"):
        load_compact(str(p))

    p = tmp_path / "cfg.pt"
    torch.save(dict(raw, config=dict(raw["config"], depth=5)), p)
    with pytest.raises(ValueError, match="unknown config keys \\['depth'\\]"):
        load_compact(str(p))

    p = tmp_path / "plain.pt"
    torch.save(net.state_dict(), p)
    with pytest.raises(ValueError, match="not a compact-model file"):
        load_compact(str(p))
    with pytest.raises(FileNotFoundError):
        load_compact(str(tmp_path / "nope.pt"))
    with pytest.raises(TypeError):
        save_compact(nn.Linear(2, 2), str(tmp_path / "x.pt"))


@pytest.mark.filterwarnings("ignore:`torch.jit")
def test_torchscript_parity(tmp_path):
    deploy, _ = absorb(_student(), profile=False, input_size=(3, 32, 32))
    path = export_torchscript(deploy, str(tmp_path / "m.ts"), input_size=(3, 64, 64))
    loaded = torch.jit.load(path)
    for b in (1, 3):
        x = torch.randn(b, 3, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), deploy(x), rtol=1e-5, atol=1e-5)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_onnx_parity(tmp_path):
    pytest.importorskip("onnxruntime")
    deploy, _ = absorb(_student("resnet18", "deap"), profile=False, input_size=(3, 32, 32))
    deploy.train()  # export must use eval mode and restore the caller's mode
    path = export_onnx(deploy, str(tmp_path / "m.onnx"), input_size=(3, 64, 64))
    assert deploy.training
    deploy.eval()
    import onnx

    onnx.checker.check_model(onnx.load(path))
    for b in (1, 4):  # dynamic batch axis
        x = torch.randn(b, 3, 64, 64)
        with torch.no_grad():
            ref = deploy(x)
        got = run_onnx(path, x)
        assert got.shape == ref.shape
        assert ((got - ref).abs().max() / ref.abs().max()).item() < 1e-4
