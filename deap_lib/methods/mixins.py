"""The mixins the distillation and pruning methods share: DEAP's distillation terms (KL, DL and the relation
slot, :mod:`deap_lib.losses.kd_slot`) and sparsity during training (lasso, proximal update, gradual pruning)."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import torch
from torch import Tensor, nn

from ..config import RunConfig
from ..engine import StepContext
from ..losses import BlockFeatureLoss, KLDistill
from ..losses.kd_slot import RelationSlot, stage_map_channels
from ..models import ReIDNet, ReIDOutput
from .base import UserError


class DistillMixin:
    """KL on logits (T), per-block DL and ARKD on the stage-3/4 maps (docs/methods/deap.rst §Losses items 3-5)."""

    def _init_distill(self, cfg: RunConfig) -> None:
        lc = cfg.loss
        self.kl = KLDistill(T=lc.kl_T)
        self.dl = BlockFeatureLoss()
        weight = lc.arkd_weight if lc.relation == "arkd" and lc.relation_weight is None else lc.relation_weight
        channels = stage_map_channels(self.net, self.teacher, (3, *cfg.model.input_size)) \
            if lc.relation == "fitnet" else ()
        try:  # ARKD or the KD loss in its place (loss.relation)
            self.relation = RelationSlot(lc.relation, weight, arkd_alpha=lc.arkd_alpha, arkd_beta=lc.arkd_beta,
                                         map_channels=channels)
        except ValueError as e:
            raise UserError(str(e)) from None

    def adaptation_modules(self) -> List[nn.Module]:
        return [self.relation] if hasattr(self, "relation") else []

    def distill_terms(self, out_s: ReIDOutput, out_t: ReIDOutput) -> Dict[str, Tensor]:
        lc = self.cfg.loss
        terms: Dict[str, Tensor] = {}
        if lc.kl_weight:
            terms["kl"] = lc.kl_weight * self.kl(out_s.logits, out_t.logits)
        if lc.dl_weight:
            terms["dl"] = lc.dl_weight * self.dl(out_s.block_feats, out_t.block_feats)
        if self.relation.active() and (lc.relation != "arkd" or lc.arkd_alpha or lc.arkd_beta):
            terms[self.relation.name] = self.relation(out_s, out_t)
        return terms


class PruningMixin:
    """Sparsity during training for the pruning methods: the lasso warm-up, the proximal update, and
    gradual pruning toward a MACs budget (``prune.schedule="gradual"``, :class:`~deap_lib.pruning.GradualPruning`).

    ``prune.lasso_warmup_frac`` (our extension; the paper applies lambda from the first iteration) ramps
    lambda linearly from 0 over that fraction of the run: from a random initialisation a full-strength
    lasso shrinks every pruner at once before the task has shaped any feature (docs/study.rst §Scaling the recipe down)."""

    def _init_pruning(self, cfg: RunConfig) -> None:
        from ..pruning import GradualPruning

        pc = cfg.prune
        self._gradual = None
        if pc.schedule == "gradual":
            if pc.target_macs is None:
                raise UserError("prune.schedule='gradual' needs prune.target_macs (the MACs budget to reach)")
            self._gradual = GradualPruning(self.net, target_macs=pc.target_macs, total_epochs=cfg.optim.epochs,
                                           end_frac=pc.gradual_end_frac, input_size=(3, *cfg.model.input_size),
                                           allocation=pc.allocation, min_channels=pc.min_channels,
                                           multiple=pc.multiple(), kind=pc.budget_kind)
        elif pc.schedule != "end":
            raise UserError(f"unknown prune.schedule '{pc.schedule}'; valid: end, gradual")

    def lasso_scale(self) -> float:
        w = self.cfg.prune.lasso_warmup_frac
        return 1.0 if w <= 0 else min(1.0, self.progress / w)

    def lasso_terms(self, student: ReIDNet) -> Dict[str, Tensor]:
        """Group lasso on the PCP pruners (docs/methods/deap.rst §PCP unit): lambda1 * sum of pruner-1 column norms + lambda2 *
        sum of pruner-2 row norms; none with ``prune.proximal`` (the exact proximal step replaces it)."""
        lc, pc = self.cfg.loss, self.cfg.prune
        if pc.proximal:
            return {}
        l1, l2 = student.group_lasso(eps=lc.lasso_eps, scale_invariant=lc.lasso_scale_invariant)
        k = self.lasso_scale()
        return {"lasso1": k * lc.lasso1 * l1, "lasso2": k * lc.lasso2 * l2}

    def proximal_step(self, student: ReIDNet, lr: float) -> None:
        """Proximal group soft-threshold of every pruner gate (``prune.proximal``), step ``lr * lambda``."""
        from ..losses.sparsity import proximal_group_soft_threshold_

        if not self.cfg.prune.proximal:
            return
        lc, k = self.cfg.loss, self.lasso_scale()
        with torch.no_grad():
            for block in student.pcp_blocks():
                for gate in block.gates():
                    (weight, axis), = gate.parts
                    lam = lc.lasso1 if gate.side == 1 else lc.lasso2
                    proximal_group_soft_threshold_(weight, "in" if axis == 1 else "out", k * lr * lam)

    def after_step(self, ctx: StepContext) -> None:
        self.proximal_step(self.net, float(ctx.trainer.optimizer.param_groups[0]["lr"]))
        if self._gradual is not None:
            self._gradual.apply_()

    def end_epoch(self, epoch: int) -> Optional[Mapping[str, Any]]:
        return self._gradual.update(epoch) if self._gradual is not None else None
