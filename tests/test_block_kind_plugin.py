"""A new kind of prunable block is one file: this one defines and registers a PCP kind and a method that no
library file knows about, and trains them through the CLI.

``pre_only`` carries only an input-side pruner, ``gate_in``, between conv1 and the 3x3 conv (its columns are
conv1's output channels, C1); conv2's outputs (C3) have no pruner, so they stay. ``deap_pre_only`` is DEAP on
it. In process: the new kind's network computes what the plain one does at initialisation, its gates are the
new pruner's columns, and a cut plus absorption keeps the outputs (float64 fusion). Through
``python -m deap_lib --plugin <this file> train``: it trains, is cut to a MACs budget (only C1 shrinks) and
absorbed, the run's own verification passes.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from deap_lib.methods import METHODS
from deap_lib.methods.deap import DEAP
from deap_lib.models import PCP_KINDS, PcpKind, build_model, register_pcp_kind

HERE = str(Path(__file__).resolve())
KIND = PcpKind("pre_only", pre="gate_in", post=None)


class PreOnlyDEAP(DEAP):
    """DEAP's losses and cut on blocks that carry the input-side pruner only."""

    name = "deap_pre_only"
    pcp = "pre_only"


# registered when the CLI loads this file as a plugin (``--plugin``); pytest's own import of the test module
# leaves the library's registries as they are
if __name__.startswith("deap_plugin_"):
    register_pcp_kind(KIND)
    METHODS.register(PreOnlyDEAP.name, PreOnlyDEAP)


@pytest.fixture
def kind():
    """The new kind, registered for one test and removed after it."""
    register_pcp_kind(KIND)
    yield KIND
    PCP_KINDS._items.pop(KIND.name)


def _embed(net, x):
    out = net.eval()(x)
    return out.embedding if hasattr(out, "embedding") else out


# ------------------------------------------------------------------------------------------------ in process
def test_an_unknown_kind_is_refused_naming_the_registered_ones():
    with pytest.raises(ValueError, match=r"pcp must be None or a registered PCP kind \(cdd, deap\), got 'pre_only'"):
        build_model("resnet50", 5, width=0.125, pcp="pre_only")
    with pytest.raises(ValueError, match="needs a pre or a post pruner"):
        PcpKind("empty", pre=None, post=None)


@pytest.mark.parametrize("arch", ["resnet50", "resnet18"])
def test_the_new_kind_builds_gates_cuts_and_fuses(kind, arch):
    from deap_lib.absorb import absorb
    from deap_lib.pruning import plain_to_pcp

    torch.manual_seed(0)
    plain = build_model(arch, 5, width=0.125)
    net = plain_to_pcp(plain, "pre_only")
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(_embed(plain, x), _embed(net, x), atol=1e-5)  # identity pruners: the plain network
    names = [n for n, _ in net.named_parameters() if n.split(".")[-2] in ("gate_in", "pruner1", "pruner2",
                                                                         "compactor")]
    assert names and all(n.endswith("gate_in.weight") for n in names)
    gates = [g for b in net.pcp_blocks() for g in b.gates()]
    bottleneck = arch == "resnet50"
    # a bottleneck's pruner is input-side (side 1, its columns); a basic block's single one output-side (rows)
    assert {(g.name, g.side) for g in gates} == {("gate_in", 1 if bottleneck else 2)}
    with torch.no_grad():  # zero half of the first block's gate channels: the threshold cut takes them
        w = net.backbone.stage1[0].gate_in.weight
        w[:, : w.shape[1] // 2].zero_() if bottleneck else w[: w.shape[0] // 2].zero_()
    ref = _embed(net, x)
    deploy, report = absorb(net, threshold=1e-3, min_channels=1, input_size=(3, 64, 64))
    first = report.blocks[0]
    if bottleneck:
        assert first.kept[0] == first.original[0] // 2 and first.kept[1] == first.original[1]  # C3 stays
    else:
        assert first.kept[0] == first.original[0] // 2
    assert deploy.config["pcp"] is None and torch.allclose(_embed(deploy, x), ref, atol=1e-4)


# ------------------------------------------------------------------------------------------------ the CLI
def test_the_plugin_kind_trains_is_cut_and_absorbed_through_the_cli(tmp_path):
    from cli_helpers import deap_cli, quick_teacher  # (not at import: the CLI loads this file as a plugin)

    assert "deap_pre_only" not in METHODS.names() and "pre_only" not in PCP_KINDS.names()
    root, data, tpath = quick_teacher(HERE, tmp_path)
    out = root / "pre_only"
    deap_cli(HERE, "train", "--method", "deap_pre_only", "--preset", "quick", "--data", data, "--set",
             "data.synthetic=tiny", "--teacher", tpath, "--out", str(out), "--epochs", "2", "--set",
             "prune.target_macs=0.7", "--no-progress", "--threads", "1")
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["method"] == "deap_pre_only" and {"unpruned", "pruned", "absorbed"} <= set(m["forms"])
    assert m["absorb_verification"]["max_rel"] < 1e-6
    assert m["forms"]["absorbed"]["macs"] <= 0.7 * m["forms"]["unpruned"]["macs"] + 1
    kept, orig = m["kept_widths"], m["original_widths"]
    assert all(k[-1] == o[-1] for k, o in zip(kept, orig))  # C3 has no pruner: never cut
    assert sum(k[0] for k in kept) < sum(o[0] for o in orig)  # C1 was
    norms = json.loads((out / "pruner_norms.json").read_text())  # per epoch, every gate group's norm
    assert len(norms[max(norms, key=int)]) == sum(o[0] for o in orig)  # the C1 columns, nothing else
