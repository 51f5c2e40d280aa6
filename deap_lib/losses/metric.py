"""Metric loss: batch-hard triplet loss on un-normalised global features (DEAP/CDD triplet)."""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ._common import fp32_region, pairwise_euclidean, zero_like_graph


class TripletLoss(nn.Module):
    """Batch-hard triplet loss.

    d_ij = sqrt(max(||g_i||^2 + ||g_j||^2 - 2 g_i.g_j, 1e-12)) on the raw features (no normalisation).
    For each anchor i: d_ap = max_{j: y_j = y_i} d_ij (the anchor itself included), d_an = min_{j: y_j != y_i} d_ij.
    L = mean_i max(0, d_ap - d_an + margin), or mean_i softplus(d_ap - d_an) with ``soft_margin=True``.
    A batch with a single identity has no negatives: the loss is 0 (still attached to the graph).
    """

    def __init__(self, margin: float = 0.3, soft_margin: bool = False):
        super().__init__()
        if margin < 0:
            raise ValueError(f"TripletLoss: margin must be >= 0, got {margin}")
        self.margin = float(margin)
        self.soft_margin = bool(soft_margin)

    def forward(self, feats: Tensor, labels: Tensor) -> Tensor:
        if feats.dim() != 2:
            raise ValueError(f"TripletLoss: features must be (B, D), got {tuple(feats.shape)}")
        if labels.shape != feats.shape[:1]:
            raise ValueError(f"TripletLoss: labels must be (B,) = ({feats.shape[0]},), got {tuple(labels.shape)}")
        with fp32_region(feats):
            dist = pairwise_euclidean(feats, feats, method="gram")
            same = labels.unsqueeze(0) == labels.unsqueeze(1)
            if bool(same.all()):
                return zero_like_graph(feats)
            d_ap = dist.masked_fill(~same, float("-inf")).amax(dim=1)
            d_an = dist.masked_fill(same, float("inf")).amin(dim=1)
            if self.soft_margin:
                return F.softplus(d_ap - d_an).mean()
            return F.relu(d_ap - d_an + self.margin).mean()

    def extra_repr(self) -> str:
        return f"margin={self.margin}, soft_margin={self.soft_margin}"
