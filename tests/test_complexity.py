"""Tests for deap_lib.complexity: hand-computed MACs/params, classifier exclusion, no thop leftovers."""
import pytest
import torch
from torch import nn

from deap_lib.complexity import classifier_parameters, measure_latency, profile


class TinyReID(nn.Module):
    """conv3x3 -> BN -> ReLU -> GAP -> Linear embedding; classifier only used in training mode."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.embed = nn.Linear(8, 4)
        self.classifier = nn.Linear(4, 10)

    def forward(self, x):
        e = self.embed(self.pool(self.relu(self.bn(self.conv(x)))).flatten(1))
        return self.classifier(e) if self.training else e


class WithMethod(TinyReID):
    """Declares its classifier through classifier_parameters() (the embed layer here, to tell them apart)."""

    def classifier_parameters(self):
        return self.embed.parameters()


# hand count for a 3 x 16 x 16 input (thop conventions, bias terms not counted as MACs)
CONV_MACS = 8 * 16 * 16 * (3 * 3 * 3)      # Cout * H * W * (Cin * kh * kw) = 55,296
BN_MACS = 4 * 8 * 16 * 16                  # thop 0.1.1: 2 per element, doubled when affine = 8,192
POOL_MACS = (16 * 16 + 1) * 8              # thop: (pool window + 1) per output = 2,056
EMBED_MACS = 8 * 4                         # in * out = 32
PARAMS_CONV, PARAMS_BN, PARAMS_EMBED, PARAMS_CLS = 8 * 3 * 9, 2 * 8, 8 * 4 + 4, 4 * 10 + 10


def test_profile_hand_computed():
    model = TinyReID()
    out = profile(model, (3, 16, 16))
    assert out["macs"] == CONV_MACS + BN_MACS + POOL_MACS + EMBED_MACS  # classifier not run in eval mode
    assert out["params"] == PARAMS_CONV + PARAMS_BN + PARAMS_EMBED + PARAMS_CLS
    assert out["params_no_classifier"] == PARAMS_CONV + PARAMS_BN + PARAMS_EMBED
    assert out["input_size"] == (3, 16, 16)


def test_profile_sequential_without_classifier():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 5 * 6, 2))
    out = profile(model, (3, 5, 6))
    assert out["macs"] == 4 * 5 * 6 * 3 + 4 * 4 * 5 * 6 + 4 * 5 * 6 * 2  # conv (no bias) + BN + linear
    assert out["params"] == out["params_no_classifier"] == (3 * 4 + 4) + 8 + (120 * 2 + 2)


def test_classifier_parameters_method_takes_precedence():
    model = WithMethod()
    assert [p.shape for p in classifier_parameters(model)] == [torch.Size([4, 8]), torch.Size([4])]
    out = profile(model, (3, 16, 16))
    assert out["params_no_classifier"] == out["params"] - PARAMS_EMBED


def test_profile_leaves_no_thop_state_on_model():
    model = TinyReID().train()
    keys = list(model.state_dict().keys())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    profile(model, (3, 16, 16))
    assert list(model.state_dict().keys()) == keys
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # BN running stats untouched
    assert model.training
    for m in model.modules():
        assert not hasattr(m, "total_ops") and not hasattr(m, "total_params")
        assert len(m._forward_hooks) == 0 and len(m._forward_pre_hooks) == 0


def test_profile_bad_input_size():
    with pytest.raises(ValueError, match="input_size"):
        profile(TinyReID(), (3, 0, 16))


@pytest.mark.parametrize("batch_size", [1, 3])
def test_measure_latency_dict(batch_size):
    model = TinyReID().train()
    threads = torch.get_num_threads()
    out = measure_latency(model, (3, 16, 16), batch_size, threads=1, warmup=1, repeats=4)
    assert set(out) >= {"median_ms", "p10_ms", "p90_ms", "per_image_ms", "batch_size", "threads"}
    assert 0 < out["p10_ms"] <= out["median_ms"] <= out["p90_ms"]
    assert out["per_image_ms"] == pytest.approx(out["median_ms"] / batch_size)
    assert out["batch_size"] == batch_size and out["threads"] == 1
    assert torch.get_num_threads() == threads and model.training
