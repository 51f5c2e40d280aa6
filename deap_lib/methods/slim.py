"""``kd_slim``: the naive combination of KD and network pruning that DEAP's dilemma is about.

Plain KD (KL on the logits at temperature T, beside the task losses) and network slimming (Liu et al.,
2017): an L1 penalty ``lambda * sum |gamma_c|`` on the BatchNorm scale factors of the student's *own*
channels (conv1-BN and conv2-BN of every bottleneck, ``lambda`` = ``loss.lasso1``), i.e. sparsity on the very
weights that KD is shaping, which is what the paper's PCP pruners are there to avoid (docs/methods/deap.rst
§PCP unit). After training the channels whose ``|gamma_c|`` is under ``prune.threshold`` are cut (or, with
``prune.target_macs``, the smallest ones globally until the budget holds) by the shared cut-and-absorb code.

A cut channel with ``gamma_c ~ 0`` still outputs the constant ``ReLU(beta_c)``: unlike DEAP's zero pruner
columns, the cut is not exact, and BatchNorm statistics are re-computed on training batches after it
(``prune.bn_recalib_batches``; the ``pruned_no_recalib`` form records the cut before it). ``kd_np_direct``
(group lasso on the ``(gamma, beta)`` pairs with all of DEAP's distillation terms, an exact cut) stays as
the "PCP pruners vs BN gates" ablation.
"""
from typing import Any, Dict

import torch
from torch import Tensor

from ..models import ReIDNet
from ..pruning import Scores
from .base import Method, UserError
from .mixins import DistillMixin, PruningMixin
from .registry import register_method


def bn_scale_l1(model: ReIDNet) -> Tensor:
    """``sum_blocks sum_gates sum_c |gamma_c|`` over the BN gates of a plain network (fp32)."""
    total = None
    for _, block in model.named_blocks():
        for gate in block.gates():
            gamma = _gamma(gate)
            term = gamma.float().abs().sum()
            total = term if total is None else total + term
    if total is None:
        raise ValueError("bn_scale_l1: the model has no prunable blocks")
    return total


def bn_scale_scores(model: ReIDNet) -> Scores:
    """Slimming's importance: ``|gamma_c|`` of every BN gate (``group_scores`` order)."""
    return [tuple(_gamma(g).detach().float().abs() for g in block.gates()) for _, block in model.named_blocks()]


def _gamma(gate) -> Tensor:
    gamma, axis = gate.parts[0]
    if gamma.dim() != 1 or axis != 0 or not gate.name.startswith("bn"):
        raise ValueError(f"kd_slim needs BatchNorm gates (plain blocks), got gate '{gate.name}'")
    return gamma


@register_method
class KDSlim(DistillMixin, PruningMixin, Method):
    name = "kd_slim"
    needs_teacher = True
    pcp = None
    prunes = True

    def __init__(self, cfg, student, teacher=None, **kw):
        super().__init__(cfg, student, teacher, **kw)
        if cfg.prune.schedule != "end":
            raise UserError("kd_slim cuts once after training (prune.schedule='end'), got "
                            f"prune.schedule='{cfg.prune.schedule}'")
        self._init_distill(cfg)
        self._init_pruning(cfg)

    def forward_train(self, batch) -> Dict[str, Tensor]:
        imgs, pids = batch[0], batch[1]
        lc = self.cfg.loss
        out_s, out_t = self.student(imgs), self.teacher_forward(self.teacher_view(batch))
        terms = self.task_terms(out_s, pids)
        if lc.kl_weight:
            terms["kl"] = lc.kl_weight * self.kl(out_s.logits, out_t.logits)
        terms["bn_l1"] = self.lasso_scale() * lc.lasso1 * bn_scale_l1(self.net)
        return terms

    def compress(self, ctx) -> Dict[str, Any]:
        from ..compression import compress_student

        with torch.no_grad():
            scores = bn_scale_scores(self.net)
        return compress_student(self.net, self.cfg.prune, ctx.rec, ctx.data.recalib_batches, scores=scores)
