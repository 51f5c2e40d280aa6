"""Identity (classification) loss: cross entropy with label smoothing (DEAP/CDD ID loss)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ._common import fp32_region


class CrossEntropyLabelSmooth(nn.Module):
    """L_ce = mean_i sum_c -q_ic log softmax(z)_ic with q = (1 - eps) onehot(y) + eps / C.

    ``logits`` (B, C) and integer ``targets`` (B,) in [0, C); computed in float32.
    """

    def __init__(self, epsilon: float = 0.1):
        super().__init__()
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"CrossEntropyLabelSmooth: epsilon must lie in [0, 1], got {epsilon}")
        self.epsilon = float(epsilon)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        if logits.dim() != 2:
            raise ValueError(f"CrossEntropyLabelSmooth: logits must be (B, C), got {tuple(logits.shape)}")
        if targets.shape != logits.shape[:1]:
            raise ValueError(f"CrossEntropyLabelSmooth: targets must be (B,) = ({logits.shape[0]},), "
                             f"got {tuple(targets.shape)}")
        if targets.dtype.is_floating_point:
            raise TypeError(f"CrossEntropyLabelSmooth: targets must be integer class ids, got {targets.dtype}")
        num_classes = logits.shape[1]
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
            raise ValueError(f"CrossEntropyLabelSmooth: targets must lie in [0, {num_classes}), got range "
                             f"[{int(targets.min())}, {int(targets.max())}]")
        with fp32_region(logits):
            log_p = F.log_softmax(logits.float(), dim=1)
            q = torch.full_like(log_p, self.epsilon / num_classes)
            q.scatter_add_(1, targets.long().unsqueeze(1),
                           torch.full_like(log_p[:, :1], 1.0 - self.epsilon))
            return -(q * log_p).sum(dim=1).mean()

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}"
