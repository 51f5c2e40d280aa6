"""``cdd``: capacity dynamic distillation with retrieval-guided gradient resetting (CVPR 2023; docs/methods/cdd.rst).

The student carries one identity-initialised compactor per block, after conv2 + BN2 (``pcp="cdd"``; conv1's
width is fixed). Losses (docs/methods/cdd.rst §Losses): CE-LS + batch-hard triplet + KL (T) + ``fit_weight`` x FIT, the
per-block unsquared L2 distance of the conv2-level GAP vectors (``ReIDOutput.mid_feats``, DEAP's DL one
layer earlier). Two phases over the run:

* epochs ``1 .. round(lasso_frac * E)`` (the release: 20 of 120): the compactor row group lasso
  ``lambda sum_o ||W[o, :]||`` is a loss term (plain backprop);
* the rest: no lasso term; after every backward (unscaled gradients under AMP) gradient resetting
  (:mod:`deap_lib.resetting`) masks the common low-contribution rows, zeroes their task gradient and adds the
  lasso subgradient to every row.

``resetting=False`` is the ablation "lasso only, no masks": the lasso stays a loss term for the whole run.
Compression is the study's: the paper's cut (``prune.threshold``; the release uses 1e-5) or a MACs budget
(``prune.target_macs``), then BN re-calibration and absorption ``P x K2`` into one 3x3 conv per block.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

from ..losses import BlockFeatureLoss, KLDistill
from ..resetting import GradientResetting
from .base import Method, UserError
from .mixins import PruningMixin
from .registry import register_method


@dataclass
class CDDArgs:
    fit_weight: float = 0.5  # FIT on the conv2-level vectors (release: 0.5)
    lasso: float = 0.004  # compactor row group lasso lambda_c (release: 0.004)
    lasso_frac: float = 20 / 120  # share of the run with the lasso as a loss term (release: 20 of 120 epochs)
    resetting: bool = True  # False: lasso term for the whole run, no masks (the ablation)
    bank_size: int = 24000  # FIFO rows per block; a multiple of the batch (release: 24,000 with B = 96)
    mask_k: int = 2  # teacher neighbours per sample (release: 2)
    mask_ratio: float = 0.5  # r: share of channels in each low-contribution set (release: 0.5)
    mask_distance: str = "cosine"  # neighbour search: cosine | l2 (release: cosine)


@register_method
class CDD(PruningMixin, Method):
    name = "cdd"
    needs_teacher = True
    pcp = "cdd"
    prunes = True
    conv2_feats = True
    Args = CDDArgs

    def __init__(self, cfg, student, teacher=None, **kw):
        super().__init__(cfg, student, teacher, **kw)
        a = self.args
        if not 0.0 <= a.lasso_frac <= 1.0:
            raise UserError(f"args.lasso_frac must lie in [0, 1], got {a.lasso_frac}")
        self._init_pruning(cfg)
        self.kl = KLDistill(T=cfg.loss.kl_T)
        self.fit = BlockFeatureLoss()
        widths = [b.compactor.weight.shape[0] for b in self.net.pcp_blocks()]
        t_widths = [b.planes for _, b in self.teacher.backbone.named_blocks()]
        if t_widths != [b.planes for b in self.net.pcp_blocks()] or len(widths) != len(t_widths):
            raise UserError(f"cdd: the teacher's blocks (planes {t_widths}) do not match the student's "
                            f"({[b.planes for b in self.net.pcp_blocks()]}): FIT and the banks need equal widths")
        batch = cfg.data.ids_per_batch * cfg.data.num_instances
        try:
            self.grg = GradientResetting(widths, capacity=a.bank_size, batch_size=batch, k=a.mask_k,
                                         ratio=a.mask_ratio, distance=a.mask_distance)
        except ValueError as e:
            raise UserError(f"cdd: {e}") from None
        self.lasso_epochs = max(1, int(a.lasso_frac * cfg.optim.epochs + 0.5)) if a.resetting else cfg.optim.epochs
        self.resetting_now = False
        self._vectors = None

    def compactors(self):
        return [b.compactor.weight for b in self.net.pcp_blocks()]

    def before_step(self, ctx):
        super().before_step(ctx)
        self.resetting_now = self.args.resetting and ctx.epoch > self.lasso_epochs

    def forward_train(self, batch):
        imgs, pids = batch[0], batch[1]
        out_s = self.student(imgs)
        out_t = self.teacher_forward(self.teacher_view(batch))
        lc = self.cfg.loss
        terms = self.task_terms(out_s, pids)
        if lc.kl_weight:
            terms["kl"] = lc.kl_weight * self.kl(out_s.logits, out_t.logits)
        if self.args.fit_weight:
            terms["fit"] = self.args.fit_weight * self.fit(out_s.mid_feats, out_t.mid_feats)
        if self.resetting_now:
            self._vectors = ([s.detach() for s in out_s.gated_feats], out_t.mid_feats)
        else:
            _, rows = self.net.group_lasso(eps=lc.lasso_eps)
            terms["lasso"] = self.args.lasso * rows
        return terms

    def after_backward(self, ctx):
        if not self.resetting_now:
            return
        s, t = self._vectors
        self._vectors = None
        self.grg.update_(s, t)
        self.grg.reset_gradients_(self.compactors(), self.args.lasso)

    def end_epoch(self, epoch: int) -> Optional[Mapping[str, Any]]:
        row: Dict[str, Any] = dict(super().end_epoch(epoch) or {})
        row["masked_frac"] = self.grg.masked_fraction()
        for i, m in enumerate(self.grg.masks()):
            row[f"masked_{i}"] = int((m == 0).sum())
        return row
