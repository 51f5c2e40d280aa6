"""Prunable channel groups ("gates") of a block and the one group-norm primitive every method uses.

A :class:`Gate` names the tensors whose slices along a channel axis decide whether one internal channel of a
block lives: DEAP's pruner-1 columns or pruner-2 rows, CDD's compactor rows, or the BatchNorm
``(gamma, beta)`` pairs of a plain block (a channel whose pair is 0 outputs exactly 0 after its ReLU).
Each block lists its gates (:meth:`Bottleneck.gates`); importance, lasso, selection and cutting are written
once over that list (:mod:`deap_lib.pruning`, :mod:`deap_lib.absorb`), whatever the kind of block.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import torch
from torch import Tensor


@dataclass(frozen=True)
class Gate:
    """One prunable channel group of a block.

    ``name``: the module that carries it (``pruner1``, ``pruner2``, ``compactor``, ``bn1``, ``bn2``);
    ``index``: which entry of ``block.widths`` it controls; ``side``: 1 for an input-side pruner (DEAP's
    pruner 1, weighted by ``lasso1``), 2 for an output-side one (pruner 2, compactor, BN gates of conv2);
    ``parts``: ``(tensor, channel_axis)`` pairs whose slices along the axis form one group per channel.
    """

    name: str
    index: int
    side: int
    parts: Tuple[Tuple[Tensor, int], ...]

    @property
    def size(self) -> int:
        t, axis = self.parts[0]
        return int(t.shape[axis])


def group_norms(parts: Sequence[Tuple[Tensor, int]], eps: float = 0.0, dtype: torch.dtype = torch.float32
                ) -> Tensor:
    """Per-channel L2 norms ``sqrt(sum over parts of sum_{other axes} w^2 + eps)``, in ``dtype``.

    The one group-norm primitive: a pruner column (``(W, 1)``), a pruner row (``(W, 0)``) or a BN pair
    (``((gamma, 0), (beta, 0))``). Differentiable; detach for scores."""
    total = None
    for t, axis in parts:
        sq = t.to(dtype).pow(2)
        if sq.dim() > 1:
            sq = sq.sum(dim=tuple(d for d in range(sq.dim()) if d != axis))
        total = sq if total is None else total + sq
    if total is None:
        raise ValueError("group_norms: a gate needs at least one (tensor, axis) part")
    return (total + eps).sqrt() if eps else total.sqrt()


def gate_norms(gate: Gate, eps: float = 0.0, dtype: torch.dtype = torch.float32) -> Tensor:
    return group_norms(gate.parts, eps, dtype)


@torch.no_grad()
def zero_channels_(gate: Gate, drop: Tensor) -> None:
    """Zero the dropped channels (bool mask ``drop``, or indices) of every part of ``gate`` in place."""
    for t, axis in gate.parts:
        d = drop.to(t.device)
        idx = torch.nonzero(d).flatten() if d.dtype == torch.bool else d
        t.index_fill_(axis, idx, 0.0)
