"""KD baselines compared against DEAP's ARKD: AT, FitNet, RKD, PKT, SP.

All take student inputs first and teacher inputs second, detach the teacher and compute in float32.
Loss weights (e.g. AT's beta/2 = 500, PKT's 30000) are left to the caller.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ._common import MapList, check_pairs, fp32_region, match_spatial, pairwise_euclidean, spatial_attention, \
    zero_like_graph

__all__ = ["AttentionTransfer", "FitNet", "RKD", "PKT", "SimilarityPreserving"]


class AttentionTransfer(nn.Module):
    """Attention transfer (Zagoruyko & Komodakis, 2017), squared-distance variant.

    Per stage: a(F) = normalise_L2(flatten((1/C) sum_c F^p)); L_stage = (1/B) sum_i ||a_s,i - a_t,i||_2^2.
    Returns the **mean over stages**. This is the authors' public code variant (squared difference of
    normalised maps), except that their ``at_loss`` also averages over the H*W positions (ours = HW x theirs
    per stage) and sums stages with weight beta/2; the paper's text writes an unsquared p-norm.
    Spatially mismatched pairs are pooled to (min H, min W) as in ARKD.
    """

    def __init__(self, p: float = 2):
        super().__init__()
        self.p = float(p)

    def forward(self, student_maps: MapList, teacher_maps: MapList) -> Tensor:
        s_list, t_list = check_pairs(student_maps, teacher_maps, "AttentionTransfer", ndim=4, same_shape=False)
        with fp32_region(s_list[0]):
            total = torch.zeros((), device=s_list[0].device)
            for s, t in zip(s_list, t_list):
                s, t = match_spatial(s.float(), t.detach().float())
                a_s = spatial_attention(s, self.p, normalize=True)
                a_t = spatial_attention(t, self.p, normalize=True)
                total = total + (a_s - a_t).pow(2).sum(dim=1).mean()
            return total / len(s_list)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class FitNet(nn.Module):
    """FitNet hint loss: MSE(r(s), t) averaged over all entries, summed over (student, teacher) pairs.

    ``regressor`` (optional) maps student features to the teacher's shape: one module (applied to every
    pair), or a sequence with one module (or ``None`` = identity) per pair, e.g. a 1x1 ``nn.Conv2d`` for
    maps or ``nn.Linear`` for vectors. It is a sub-module of this loss, so the caller must add
    ``loss.parameters()`` to the optimiser. Without a regressor (D3still's setting) shapes must match.
    """

    def __init__(self, regressor: Union[None, nn.Module, Sequence[Optional[nn.Module]]] = None):
        super().__init__()
        if regressor is None or isinstance(regressor, nn.Module):
            self.regressor = regressor
            self.per_pair = False
        else:
            self.regressor = nn.ModuleList([nn.Identity() if r is None else r for r in regressor])
            self.per_pair = True

    def forward(self, student: MapList, teacher: MapList) -> Tensor:
        s_list, t_list = check_pairs(student, teacher, "FitNet", same_shape=False)
        if self.per_pair and len(self.regressor) != len(s_list):
            raise ValueError(f"FitNet: {len(self.regressor)} regressors for {len(s_list)} feature pairs")
        with fp32_region(s_list[0]):
            total = torch.zeros((), device=s_list[0].device)
            for k, (s, t) in enumerate(zip(s_list, t_list)):
                s = s.float()
                if self.regressor is not None:
                    reg = self.regressor[k] if self.per_pair else self.regressor
                    s = reg(s)
                if s.shape != t.shape:
                    raise ValueError(f"FitNet: pair {k} student {tuple(s.shape)} (after regressor) does not "
                                     f"match teacher {tuple(t.shape)}; pass a regressor that maps one to the other")
                total = total + F.mse_loss(s, t.detach().float())
            return total


def _flat_pair(student: Tensor, teacher: Tensor, loss: str):
    (s,), (t,) = check_pairs(student, teacher, loss, same_shape=False)
    if s.dim() < 2 or t.dim() < 2:
        raise ValueError(f"{loss}: features must be (B, ...), got student {tuple(s.shape)}, teacher {tuple(t.shape)}")
    return s.float().flatten(1), t.detach().float().flatten(1)


class RKD(nn.Module):
    """Relational KD (Park et al., 2019) as in D3still: 25 x distance term + 50 x angle term.

    Distance: psi_D(i, j) = d_ij / mean_{k != l} d_kl with d = sqrt(max(||x_i - x_j||^2, 1e-12)) (Gram
    form), diagonal set to 0; smooth-L1 (beta 1) averaged over all B^2 entries.
    Angle: psi_A(i, j, k) = <normalise(x_i - x_j), normalise(x_k - x_j)>; smooth-L1 averaged over B^3 triples
    (degenerate triples give 0 vectors, so 0 cosines, in both nets). Student/teacher dims may differ.
    Needs B >= 2 (returns 0 for B = 1).
    """

    def __init__(self, distance_weight: float = 25.0, angle_weight: float = 50.0):
        super().__init__()
        self.distance_weight, self.angle_weight = float(distance_weight), float(angle_weight)

    @staticmethod
    def _dist(x: Tensor) -> Tensor:
        d = pairwise_euclidean(x, x, method="gram")
        d = d.masked_fill(torch.eye(x.shape[0], dtype=torch.bool, device=x.device), 0.0)
        return d / d[d > 0].mean()

    @staticmethod
    def _angle(x: Tensor) -> Tensor:
        e = F.normalize(x.unsqueeze(0) - x.unsqueeze(1), p=2, dim=2)  # e[j, i] = normalise(x_i - x_j)
        return torch.bmm(e, e.transpose(1, 2))  # [j, i, k]

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        with fp32_region(student):
            s, t = _flat_pair(student, teacher, "RKD")
            if s.shape[0] < 2:
                return zero_like_graph(s)
            with torch.no_grad():
                t_d, t_a = self._dist(t), self._angle(t)
            loss_d = F.smooth_l1_loss(self._dist(s), t_d)
            loss_a = F.smooth_l1_loss(self._angle(s), t_a)
            return self.distance_weight * loss_d + self.angle_weight * loss_a

    def extra_repr(self) -> str:
        return f"distance_weight={self.distance_weight}, angle_weight={self.angle_weight}"


class PKT(nn.Module):
    """Probabilistic knowledge transfer (Passalis & Tefas, 2018) as in D3still.

    x-hat = x / (||x|| + eps); K = (x-hat x-hat^T + 1) / 2; P = K / row sums;
    L = mean over all B^2 entries of P_t log((P_t + eps) / (P_s + eps)). Student/teacher dims may differ.
    """

    def __init__(self, eps: float = 1e-7):
        super().__init__()
        self.eps = float(eps)

    def _prob(self, x: Tensor) -> Tensor:
        x = x / (torch.linalg.vector_norm(x, dim=1, keepdim=True) + self.eps)
        k = (x @ x.t() + 1.0) / 2.0
        return k / k.sum(dim=1, keepdim=True)

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        with fp32_region(student):
            s, t = _flat_pair(student, teacher, "PKT")
            p_s, p_t = self._prob(s), self._prob(t)
            return (p_t * torch.log((p_t + self.eps) / (p_s + self.eps))).mean()

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


class SimilarityPreserving(nn.Module):
    """Similarity-preserving KD (Tung & Mori, 2019).

    Per stage: G = normalise_rows(F F^T) with F the (B, C*H*W) flattened map; L_stage = ||G_t - G_s||_F^2 / B^2.
    Returns the **sum over stages** (shapes may differ between student and teacher: G is B x B).
    """

    def forward(self, student_maps: MapList, teacher_maps: MapList) -> Tensor:
        s_list, t_list = check_pairs(student_maps, teacher_maps, "SimilarityPreserving", same_shape=False)
        with fp32_region(s_list[0]):
            total = torch.zeros((), device=s_list[0].device)
            for s, t in zip(s_list, t_list):
                fs, ft = s.float().flatten(1), t.detach().float().flatten(1)
                g_s = F.normalize(fs @ fs.t(), p=2, dim=1)
                g_t = F.normalize(ft @ ft.t(), p=2, dim=1)
                total = total + (g_t - g_s).pow(2).sum() / (fs.shape[0] ** 2)
            return total
