"""``kd_np_filters``: DEAP's distillation with the group lasso on the 3x3 filters themselves (no pruners).

The dilemma DEAP's PCP unit is built to avoid: sparsity on the very weights that distillation is shaping.
The student is a plain network; with DEAP's losses (KL + DL + ARKD) the lasso acts where DEAP's two pruners
sit, on the bottleneck's 3x3 conv ``W2``: ``lambda1 sum_c ||W2[:, c]||`` over its input slices (the C1
channels, DEAP's pruner-1 columns) and ``lambda2 sum_o ||W2[o]||`` over its output filters (the C3 channels,
pruner-2 rows). The cut ranks channels by the same norms (threshold or budget, the shared cut code) and
removes them structurally. A C1 channel whose input slice is zero is unused, so its removal is exact; a zeroed
C3 filter still passes its BN shift ``relu(beta_o)`` on to conv3, so its removal is not (BN re-calibration
after a budget cut absorbs part of it). ``kd_np_direct`` puts the lasso on the BN gates instead.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch
from torch import Tensor

from ..losses import group_lasso, group_norms
from ..models import ReIDNet
from ..models.blocks import Bottleneck
from .base import Method, UserError
from .mixins import DistillMixin, PruningMixin
from .registry import register_method


def mid_filters(model: ReIDNet) -> List[Tensor]:
    """The 3x3 conv weight ``W2`` of every bottleneck (``named_blocks`` order)."""
    out = []
    for name, block in model.named_blocks():
        if not isinstance(block, Bottleneck) or block.pcp is not None or block.conv2.conv.kernel_size != (3, 3):
            raise UserError(f"kd_np_filters needs plain ResNet bottlenecks (a 3x3 conv2); block {name} is a "
                            f"{type(block).__name__}")
        out.append(block.conv2.conv.weight)
    return out


def filter_lasso(model: ReIDNet, lam1: float, lam2: float, eps: float) -> Tensor:
    """``lambda1 sum_c ||W2[:, c]|| + lambda2 sum_o ||W2[o]||`` over every bottleneck (fp32)."""
    total = None
    for w in mid_filters(model):
        term = lam1 * group_lasso(w, "in", eps) + lam2 * group_lasso(w, "out", eps)
        total = term if total is None else total + term
    return total


def filter_scores(model: ReIDNet) -> List[Tuple[Tensor, Tensor]]:
    """Channel importance for the cut: per block ``(||W2[:, c]|| over C1, ||W2[o]|| over C3)``."""
    with torch.no_grad():
        return [(group_norms(w, "in", 0.0), group_norms(w, "out", 0.0)) for w in mid_filters(model)]


@register_method
class KDNPFilters(DistillMixin, PruningMixin, Method):
    name = "kd_np_filters"
    needs_teacher = True
    pcp = None
    prunes = True

    def __init__(self, cfg, student, teacher=None, **kw):
        super().__init__(cfg, student, teacher, **kw)
        if cfg.prune.schedule != "end" or cfg.prune.proximal:
            raise UserError("kd_np_filters cuts once after training (prune.schedule='end', prune.proximal=False)")
        mid_filters(self.net)  # a clear error for a network without them
        self._init_distill(cfg)
        self._init_pruning(cfg)

    def forward_train(self, batch) -> Dict[str, Tensor]:
        imgs, pids = batch[0], batch[1]
        lc = self.cfg.loss
        out_s, out_t = self.student(imgs), self.teacher_forward(self.teacher_view(batch))
        terms = {**self.task_terms(out_s, pids), **self.distill_terms(out_s, out_t)}
        terms["filter_lasso"] = self.lasso_scale() * filter_lasso(self.net, lc.lasso1, lc.lasso2, lc.lasso_eps)
        return terms

    def compress(self, ctx) -> Dict[str, Any]:
        from ..compression import compress_student

        return compress_student(self.net, self.cfg.prune, ctx.rec, ctx.data.recalib_batches,
                                scores=filter_scores(self.net))
