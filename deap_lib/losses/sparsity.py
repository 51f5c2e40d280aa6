"""Group-lasso sparsity on the PCP pruners (DEAP section 1.2) and a proximal group soft-threshold step.

A pruner is a bias-free 1x1 conv with weight W (O, I, 1, 1). Groups:
* ``dim="in"``  - one group per input channel (column) W[:, c]  (pruner 1: columns = conv1's outputs);
* ``dim="out"`` - one group per output channel (row)   W[o, :]  (pruner 2: rows = conv3's inputs).
Any (O, I, ...) weight works (the trailing kernel axes join the group).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..models.gates import group_norms as _gate_norms

#: eps inside the square root: ||g|| = sqrt(sum g^2 + eps). The released code has none, so an exactly
#: zero group has an infinite/NaN gradient; with eps the gradient there is exactly 0. It adds at most
#: sqrt(eps) = 1e-6 per group to the lasso value.
LASSO_EPS = 1e-12


def _reduce_dims(weight: Tensor, dim: str):
    if weight.dim() < 2:
        raise ValueError(f"group norms need an (O, I, ...) weight, got shape {tuple(weight.shape)}")
    if dim == "in":
        return (0,) + tuple(range(2, weight.dim())), 1
    if dim == "out":
        return tuple(range(1, weight.dim())), 0
    raise ValueError(f"dim must be 'in' (column groups) or 'out' (row groups), got {dim!r}")


def group_norms(weight: Tensor, dim: str, eps: float = LASSO_EPS) -> Tensor:
    """Per-group L2 norms sqrt(sum w^2 + eps) in float32: shape (I,) for ``dim="in"``, (O,) for ``"out"``
    (the weight-level view of :func:`deap_lib.models.gates.group_norms`)."""
    _, axis = _reduce_dims(weight, dim)
    return _gate_norms(((weight, axis),), eps)


def group_lasso(weight: Tensor, dim: str, eps: float = LASSO_EPS) -> Tensor:
    """sum_g ||g||_2 over the groups of ``weight`` (float32 scalar)."""
    return group_norms(weight, dim, eps).sum()


@torch.no_grad()
def proximal_group_soft_threshold_(weight: Tensor, dim: str, tau: float) -> Tensor:
    """In place: g <- max(0, 1 - tau / ||g||) g for every group (proximal step of tau * sum ||g||).

    Groups with ||g|| <= tau (including all-zero groups) become exact zeros; the others are scaled by
    1 - tau/||g|| (true norm, no eps). Returns ``weight``. For a step after SGD, use tau = lr * lambda.
    """
    if tau < 0:
        raise ValueError(f"proximal_group_soft_threshold_: tau must be >= 0, got {tau}")
    _, keep = _reduce_dims(weight, dim)
    norms = _gate_norms(((weight, keep),))
    scale = torch.where(norms > tau, 1.0 - tau / norms.clamp(min=torch.finfo(torch.float32).tiny),
                        torch.zeros_like(norms))
    shape = [1] * weight.dim()
    shape[keep] = -1
    weight.mul_(scale.view(shape).to(weight.dtype))
    return weight


@torch.no_grad()
def gate_soft_threshold_(parts, tau: float, keep=None) -> Tensor:
    """In place, for a gate's ``(tensor, channel_axis)`` parts (e.g. a BN's ``(gamma, 0), (beta, 0)``): every
    channel's group ``g`` (its slices of all parts) becomes ``max(0, 1 - tau / ||g||) g``, the proximal step
    of ``tau * sum_c ||g_c||``; channels in the bool mask ``keep`` are left as they are. Returns the group
    norms before the step."""
    if tau < 0:
        raise ValueError(f"gate_soft_threshold_: tau must be >= 0, got {tau}")
    norms = _gate_norms(parts)
    scale = torch.where(norms > tau, 1.0 - tau / norms.clamp(min=torch.finfo(torch.float32).tiny),
                        torch.zeros_like(norms))
    if keep is not None:
        scale = torch.where(keep.to(scale.device), torch.ones_like(scale), scale)
    for t, axis in parts:
        shape = [1] * t.dim()
        shape[axis] = -1
        t.mul_(scale.view(shape).to(t.dtype))
    return norms
