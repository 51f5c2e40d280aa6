"""A frozen TorchScript graph of a network's training outputs, for a teacher that never trains.

The frozen teacher of a distillation run computes the same :class:`ReIDOutput` every step, without
gradients. :class:`FrozenFeatures` traces :meth:`ReIDNet.forward_features` of an eval-mode network once per
input shape, freezes the trace (weights become constants) and lets ``torch.jit.optimize_for_inference``
fuse what oneDNN can (conv + ReLU, conv + add + ReLU). Under bf16 the backbone's outputs are those of the
eager network bit for bit (tested), under float32 up to rounding (the fusions reassociate), and the float32
head's up to rounding (its BatchNorm1d is folded into the linear layer). On the cpu preset the bf16 teacher's
forward pass takes ~25 % less time (``benchmarks/bench_epoch.py``).

Under bf16 the convolutions are stored in bf16 and the input is cast once, which is what autocast computes
(it casts every conv's input, weight and bias to bf16; the head runs in float32 either way, see
:mod:`deap_lib.models.resnet`), so the graph runs without autocast.
"""
from __future__ import annotations

import copy
import warnings
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .output import ReIDOutput

_LISTS = ("stage_maps", "block_feats", "mid_feats", "gated_feats")


class _Flat(nn.Module):
    """``forward_features`` as a flat tuple of tensors (TorchScript traces tuples, not dataclasses)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        out = self.net.forward_features(x)
        return (out.logits, out.global_feat, out.embedding, *[t for name in _LISTS for t in getattr(out, name)])


class FrozenFeatures:
    """``forward_features`` of a frozen network as optimised TorchScript graphs, one per input shape.

    ``net`` must be in eval mode (its BN on running statistics) and is copied, so later changes to it are not
    seen. ``dtype``: the dtype its convolutions compute in (``torch.bfloat16`` for a bf16 run, float32
    otherwise). Not an ``nn.Module``: ``.to()`` cannot move it; build it on the device it runs on.
    """

    def __init__(self, net: nn.Module, dtype: torch.dtype = torch.float32):
        if net.training:
            raise ValueError("FrozenFeatures needs a network in eval mode (BN on its running statistics)")
        self.dtype = dtype
        self._net = copy.deepcopy(net).requires_grad_(False)
        if dtype != torch.float32:
            for m in self._net.modules():
                if isinstance(m, nn.Conv2d):
                    m.to(dtype)
        self._graphs: Dict[Tuple, torch.jit.ScriptModule] = {}
        self._counts: Optional[List[int]] = None

    def _graph(self, x: Tensor) -> torch.jit.ScriptModule:
        key = (tuple(x.shape), x.dtype, x.device, x.is_contiguous(memory_format=torch.channels_last))
        graph = self._graphs.get(key)
        if graph is None:
            with torch.no_grad():
                out = self._net.forward_features(x)
                self._counts = [len(getattr(out, name)) for name in _LISTS]
                with warnings.catch_warnings():  # the tracer's notes on shapes read as Python ints
                    warnings.simplefilter("ignore")
                    traced = torch.jit.trace(_Flat(self._net).eval(), x, check_trace=False, strict=False)
                    graph = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
            self._graphs[key] = graph
        return graph

    def forward_features(self, x: Tensor) -> ReIDOutput:
        """The eager network's :meth:`forward_features` of ``x`` (float32 input; cast to ``dtype`` here)."""
        x = x.to(self.dtype)
        with torch.autocast(device_type=x.device.type, enabled=False):
            flat = self._graph(x)(x)
        logits, global_feat, embedding, *rest = flat
        lists, i = {}, 0
        for name, n in zip(_LISTS, self._counts):
            lists[name] = list(rest[i:i + n])
            i += n
        return ReIDOutput(logits=logits, global_feat=global_feat, embedding=embedding, **lists)
