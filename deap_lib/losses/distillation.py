"""DEAP distillation losses: logit KD (KL), per-block feature loss (DL) and asymmetric relation KD (ARKD).

The KD baselines (AT, FitNet, RKD, PKT, SP) live in ``relation.py`` and are re-exported here.
Teacher inputs are always detached; all maths is float32.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ._common import MapList, check_pairs, fp32_region, match_spatial, pairwise_euclidean, spatial_attention
from .relation import PKT, RKD, AttentionTransfer, FitNet, SimilarityPreserving

__all__ = ["KLDistill", "BlockFeatureLoss", "ARKD", "ARKDTerms", "AttentionTransfer", "FitNet", "RKD", "PKT",
           "SimilarityPreserving"]


class KLDistill(nn.Module):
    """L_kl = T^2 / B * sum_i KL(softmax(z_t,i / T) || softmax(z_s,i / T)); teacher logits detached."""

    def __init__(self, T: float = 2.0):
        super().__init__()
        if T <= 0:
            raise ValueError(f"KLDistill: temperature T must be > 0, got {T}")
        self.T = float(T)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        (s,), (t,) = check_pairs(student_logits, teacher_logits, "KLDistill", ndim=2)
        with fp32_region(s):
            log_ps = F.log_softmax(s.float() / self.T, dim=1)
            pt = F.softmax(t.detach().float() / self.T, dim=1)
            # 'batchmean' = sum over all entries / B; kl_div uses xlogy, so p_t = 0 entries contribute 0.
            return F.kl_div(log_ps, pt, reduction="batchmean") * (self.T ** 2)

    def extra_repr(self) -> str:
        return f"T={self.T}"


class BlockFeatureLoss(nn.Module):
    """DEAP's "DL": L_dl = sum_l (1/B) sum_i ||u_t,i^l - u_s,i^l||_2 (unsquared L2 norm) over blocks l.

    ``student_feats`` / ``teacher_feats`` are equal-length lists of (B, C_l) pooled block features
    (the model's ``block_feats``). The norm's gradient at an exact zero difference is 0.
    """

    def forward(self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor]) -> Tensor:
        s_list, t_list = check_pairs(student_feats, teacher_feats, "BlockFeatureLoss", ndim=2)
        with fp32_region(s_list[0]):
            total = torch.zeros((), device=s_list[0].device)
            for s, t in zip(s_list, t_list):
                total = total + torch.linalg.vector_norm(t.detach().float() - s.float(), dim=1).mean()
            return total


class ARKDTerms(NamedTuple):
    """Parts of the ARKD loss, summed over stages.

    ``diag`` = (1/B) sum_i (D^tt_ii - D^st_ii)^2 and ``offdiag`` = (1/B) sum_{i!=j} (D^tt_ij - D^st_ij)^2
    (both unweighted); ``total`` = alpha * diag + beta * offdiag (what ``forward`` returns).
    """

    total: Tensor
    diag: Tensor
    offdiag: Tensor


class ARKD(nn.Module):
    """Asymmetric relation KD ("MKD" in the released code) on stage maps.

    Per stage: a(F) = flatten_{HxW}((1/C) sum_c F^p), L2-normalised in ``mode="cosine"`` (raw in ``"l2"``);
    D^tt_ij = ||a_t,i - a_t,j||, D^st_ij = ||a_s,i - a_t,j|| with d = sqrt(max(d^2, 1e-12));
    L = (alpha/B) sum_i (D^tt_ii - D^st_ii)^2 + (beta/B) sum_{i!=j} (D^tt_ij - D^st_ij)^2; summed over stages.

    If a student/teacher pair differs spatially, both are adaptively average-pooled to (min H, min W)
    before the attention map (the released code pools to a square (H, H), wrong for non-square maps).

    ``distance="diff"`` (default) forms distances from explicit differences, so D^tt_ii is exactly
    sqrt(1e-12) = 1e-6 and the alpha term is ~(alpha/B) sum_i ||a_s,i - a_t,i||^2 without fp32 cancellation
    noise; ``distance="gram"`` uses the released ||x||^2 + ||y||^2 - 2xy expansion (noise ~1e-4 on "zero"
    distances; O(B^2) instead of O(B^2 HW) memory). Both use the same clamp.
    Setting ``alpha=0`` or ``beta=0`` drops a term (ablation); ``return_terms=True`` returns ``ARKDTerms``.
    """

    def __init__(self, alpha: float = 10.0, beta: float = 1.0, p: float = 2, mode: str = "cosine",
                 distance: str = "diff"):
        super().__init__()
        if mode not in ("cosine", "l2"):
            raise ValueError(f"ARKD: mode must be 'cosine' or 'l2', got {mode!r}")
        if distance not in ("diff", "gram"):
            raise ValueError(f"ARKD: distance must be 'diff' or 'gram', got {distance!r}")
        self.alpha, self.beta, self.p = float(alpha), float(beta), float(p)
        self.mode, self.distance = mode, distance

    def attention(self, fmap: Tensor) -> Tensor:
        """a(F) for one (B, C, H, W) map -> (B, H*W)."""
        return spatial_attention(fmap, self.p, normalize=self.mode == "cosine")

    def forward(self, student_maps: MapList, teacher_maps: MapList, return_terms: bool = False):
        s_list, t_list = check_pairs(student_maps, teacher_maps, "ARKD", ndim=4, same_shape=False)
        with fp32_region(s_list[0]):
            device = s_list[0].device
            diag = torch.zeros((), device=device)
            offdiag = torch.zeros((), device=device)
            for k, (s, t) in enumerate(zip(s_list, t_list)):
                s, t = match_spatial(s.float(), t.detach().float())
                a_s, a_t = self.attention(s), self.attention(t)
                B = a_s.shape[0]
                d_tt = pairwise_euclidean(a_t, a_t, method=self.distance)
                d_st = pairwise_euclidean(a_s, a_t, method=self.distance)
                sq = (d_tt - d_st).pow(2)
                eye = torch.eye(B, dtype=torch.bool, device=device)
                diag = diag + sq.diagonal().sum() / B
                offdiag = offdiag + sq.masked_fill(eye, 0.0).sum() / B
            total = self.alpha * diag + self.beta * offdiag
        return ARKDTerms(total, diag, offdiag) if return_terms else total

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, beta={self.beta}, p={self.p}, mode={self.mode!r}, "
                f"distance={self.distance!r}")
