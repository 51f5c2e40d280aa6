"""Cross-resolution KD terms (CRKD, docs/methods/crkd.rst §Our design): an LR student's embeddings against an HR teacher's.

Not to be confused with ``RKD`` (:mod:`deap_lib.losses.relation`, relational KD by distances and angles).
The source (IEEE TIP 2021, abstract only) names three parts, a resolution-aware distillation loss, a
pair-wise constraint and an MMD loss; every formula below is this project's design:

* :func:`resolution_temperature`: T(s) = T0 / s for a linear scale s of the LR input (the KL of
  :class:`~deap_lib.losses.KLDistill` at that T, times T^2), softer targets for a larger resolution gap;
* :func:`embedding_l2`: (1/B) sum_i ||n(s_i) - n(t_i)||^2 with n the L2 normalisation;
* :func:`pairwise_similarity_loss`: mean over (i, j) of (cos(s_i, t_j) - cos(t_i, t_j))^2;
* :func:`mmd2_unbiased`: the unbiased U-statistic MMD^2 (Gretton et al. 2012, eq. 3) of paired samples
  with a sum of Gaussian kernels, bandwidths the median pairwise distance x {1/4, 1/2, 1, 2, 4}.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import fp32_region

BANDWIDTH_MULTIPLIERS = (0.25, 0.5, 1.0, 2.0, 4.0)


def resolution_temperature(T0: float, scale: float) -> float:
    """T(s) = T0 / s: the KD temperature for an LR input at linear scale s in (0, 1]."""
    if T0 <= 0:
        raise ValueError(f"temperature T0 must be > 0, got {T0}")
    if not 0 < scale <= 1:
        raise ValueError(f"resolution scale must be in (0, 1], got {scale}")
    return float(T0) / float(scale)


def _check(s: Tensor, t: Tensor, what: str) -> None:
    if s.dim() != 2 or t.dim() != 2:
        raise ValueError(f"{what}: expected (B, D) embeddings, got {tuple(s.shape)} and {tuple(t.shape)}")
    if s.shape != t.shape:
        raise ValueError(f"{what}: student and teacher embeddings differ in shape, {tuple(s.shape)} vs "
                         f"{tuple(t.shape)} (cross-resolution KD needs one embedding size)")


def embedding_l2(student: Tensor, teacher: Tensor) -> Tensor:
    """(1/B) sum_i ||n(s_i) - n(t_i)||^2 on L2-normalised embeddings; the teacher is detached."""
    _check(student, teacher, "embedding_l2")
    with fp32_region(student):
        s = F.normalize(student.float(), dim=1)
        t = F.normalize(teacher.detach().float(), dim=1)
        return (s - t).pow(2).sum(dim=1).mean()


def pairwise_similarity_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean over all (i, j) of (cos(s_i, t_j) - cos(t_i, t_j))^2: the LR rows keep the teacher's
    neighbourhoods among the HR columns; the teacher is detached."""
    _check(student, teacher, "pairwise_similarity_loss")
    with fp32_region(student):
        s = F.normalize(student.float(), dim=1)
        t = F.normalize(teacher.detach().float(), dim=1)
        return (s @ t.t() - t @ t.t()).pow(2).mean()


def median_bandwidth(x: Tensor, y: Tensor) -> Tensor:
    """The median of the pairwise Euclidean distances among the pooled samples [x; y] (i != j), detached."""
    with torch.no_grad():
        z = torch.cat([x, y]).float()
        d = torch.cdist(z, z)
        off = ~torch.eye(len(z), dtype=torch.bool, device=z.device)
        return d[off].median().clamp_min(1e-6)


def mmd2_unbiased(x: Tensor, y: Tensor, bandwidths: Optional[Sequence[float]] = None) -> Tensor:
    """Unbiased MMD^2 of paired samples x_i, y_i (n each, n >= 2): (1/(n(n-1))) sum_{i != j} h(i, j),
    h(i, j) = k(x_i, x_j) + k(y_i, y_j) - k(x_i, y_j) - k(x_j, y_i), k(a, b) = sum_sigma
    exp(-||a - b||^2 / (2 sigma^2)). ``bandwidths`` default: :func:`median_bandwidth` x
    :data:`BANDWIDTH_MULTIPLIERS`. Exactly 0 for x == y; may be negative (unbiased)."""
    _check(x, y, "mmd2_unbiased")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"mmd2_unbiased needs at least 2 samples, got {n}")
    with fp32_region(x):
        x, y = x.float(), y.float()
        if bandwidths is None:
            med = median_bandwidth(x, y)
            sig = torch.stack([med * m for m in BANDWIDTH_MULTIPLIERS])
        else:
            sig = torch.as_tensor(list(bandwidths), dtype=x.dtype, device=x.device)

        def kernel(a: Tensor, b: Tensor) -> Tensor:
            d2 = (a[:, None, :] - b[None, :, :]).pow(2).sum(-1)
            return torch.exp(-d2[..., None] / (2 * sig.pow(2))).sum(-1)

        kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
        h = kxx + kyy - kxy - kxy.t()
        off = ~torch.eye(n, dtype=torch.bool, device=x.device)
        return h[off].sum() / (n * (n - 1))
