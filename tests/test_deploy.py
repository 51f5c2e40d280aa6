"""Deploy runtimes: every path computes what eager PyTorch computes, and ``fastest`` picks a correct one."""
import pytest
import torch

from deap_lib.absorb import to_deploy
from deap_lib.deploy import RUNTIMES, fastest, parity, prepare
from deap_lib.models import build_model

SIZE = (3, 32, 32)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return to_deploy(build_model("resnet50", 10, width=0.125, embed_dim=16).eval())


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_every_runtime_matches_eager_at_another_batch_size(net, runtime):
    d = prepare(net, runtime, input_size=SIZE, batch_size=2, threads=1)
    try:
        x = torch.randn(5, *SIZE, generator=torch.Generator().manual_seed(1))  # traced / exported at batch 2
        out = d(x)
        ref = net(x)
        assert out.shape == ref.shape == (5, 16)
        assert parity(net, d, x) < 1e-5
        assert not torch.equal(out[0], out[1])  # not a constant output
    finally:
        d.close()
    assert not d.files  # the ONNX file is removed


def test_fastest_returns_a_correct_runtime_and_reports_all(net):
    res = fastest(net, input_size=SIZE, batch_size=1, threads=1, rounds=1, repeats=1)
    try:
        assert res["runtime"] in RUNTIMES and set(res["median_ms"]) == set(RUNTIMES)
        assert res["parity"][res["runtime"]] <= 1e-4 and res["errors"] == {}
        assert res["median_ms"][res["runtime"]] == min(res["median_ms"][r] for r in RUNTIMES
                                                       if res["parity"][r] <= 1e-4)
        x = torch.randn(3, *SIZE)
        torch.testing.assert_close(res["deployed"](x), net(x), rtol=1e-4, atol=1e-5)
    finally:
        res["deployed"].close()


def test_unknown_runtime_lists_the_valid_ones(net):
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'; valid: eager, channels_last, torchscript, onnxruntime"):
        prepare(net, "tensorrt", input_size=SIZE)
