"""The tiny base class every method (named recipe) derives from, mdistiller-style.

A method says which student it trains (``pcp``), whether it needs the frozen teacher, how it turns one
batch into named, already weighted loss terms (:meth:`Method.loss_terms`), and whether it ends with
pruning and absorption (``prunes``). Orchestration (data, trainer, evaluation, records) is in
:mod:`deap_lib.methods.runner`; one method per file.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor

from ..config import RunConfig
from ..losses import ARKD, BlockFeatureLoss, CrossEntropyLabelSmooth, KLDistill, TripletLoss
from ..models import ReIDNet, ReIDOutput


class Method:
    """Base recipe: the re-ID task loss (label-smoothed CE on logits + batch-hard triplet on the GAP
    feature, METHODS 1.5 items 1-2)."""

    name = "base"
    needs_teacher = False
    pcp: Optional[str] = None  # PCP kind of the student this method trains
    prunes = False  # ends with prune + BN re-calibration + absorb
    #: form name used in records for the trained (unpruned) model of a non-pruning method
    form = "student"

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        #: position in the run, epoch_index / epochs (0 at the first epoch); the runner keeps it current
        self.progress = 0.0
        lc = cfg.loss
        self.ce = CrossEntropyLabelSmooth(epsilon=lc.label_smoothing)
        self.triplet = TripletLoss(margin=lc.triplet_margin)

    def task_terms(self, out: ReIDOutput, pids: Tensor) -> Dict[str, Tensor]:
        lc = self.cfg.loss
        return {"ce": lc.ce_weight * self.ce(out.logits, pids),
                "triplet": lc.triplet_weight * self.triplet(out.global_feat, pids)}

    def loss_terms(self, student: ReIDNet, out_s: ReIDOutput, out_t: Optional[ReIDOutput],
                   pids: Tensor) -> Dict[str, Tensor]:
        return self.task_terms(out_s, pids)

    def post_step(self, student: ReIDNet, lr: float) -> None:
        """Called after every optimizer step (e.g. a proximal pruner update); default: nothing."""


class DistillMixin:
    """KL on logits (T), per-block DL and ARKD on the stage-3/4 maps (METHODS 1.5 items 3-5)."""

    def _init_distill(self, cfg: RunConfig) -> None:
        lc = cfg.loss
        self.kl = KLDistill(T=lc.kl_T)
        self.dl = BlockFeatureLoss()
        self.arkd = ARKD(alpha=lc.arkd_alpha, beta=lc.arkd_beta)

    def distill_terms(self, out_s: ReIDOutput, out_t: ReIDOutput) -> Dict[str, Tensor]:
        lc = self.cfg.loss
        terms: Dict[str, Tensor] = {}
        if lc.kl_weight:
            terms["kl"] = lc.kl_weight * self.kl(out_s.logits, out_t.logits)
        if lc.dl_weight:
            terms["dl"] = lc.dl_weight * self.dl(out_s.block_feats, out_t.block_feats)
        if lc.arkd_weight and (lc.arkd_alpha or lc.arkd_beta):
            terms["arkd"] = lc.arkd_weight * self.arkd(out_s.stage_maps, out_t.stage_maps)
        return terms


class LassoMixin:
    """Group lasso on the PCP pruners (METHODS 1.2): lambda1 * sum of pruner-1 column norms + lambda2 * sum
    of pruner-2 row norms, or (``prune.proximal``) an exact proximal group soft-threshold after each step.

    ``prune.lasso_warmup_frac`` (our extension; the paper applies lambda from the first iteration) ramps
    lambda linearly from 0 over that fraction of the run: from a random initialisation a full-strength
    lasso shrinks every pruner at once before the task has shaped any feature (METHODS 8.1)."""

    def lasso_scale(self) -> float:
        w = self.cfg.prune.lasso_warmup_frac
        return 1.0 if w <= 0 else min(1.0, self.progress / w)

    def lasso_terms(self, student: ReIDNet) -> Dict[str, Tensor]:
        lc, pc = self.cfg.loss, self.cfg.prune
        if pc.proximal:
            return {}
        l1, l2 = student.group_lasso(eps=lc.lasso_eps, scale_invariant=lc.lasso_scale_invariant)
        k = self.lasso_scale()
        return {"lasso1": k * lc.lasso1 * l1, "lasso2": k * lc.lasso2 * l2}

    def proximal_step(self, student: ReIDNet, lr: float) -> None:
        from ..losses.sparsity import proximal_group_soft_threshold_

        if not self.cfg.prune.proximal:
            return
        lc, k = self.cfg.loss, self.lasso_scale()
        with torch.no_grad():
            for block in student.pcp_blocks():
                proximal_group_soft_threshold_(block.pruner1.weight, "in", k * lr * lc.lasso1)
                proximal_group_soft_threshold_(block.pruner2.weight, "out", k * lr * lc.lasso2)
