"""``structure_kd``: compact structure learning by KD under a MACs or parameter budget (docs/methods/structure.rst), and
``thinned_kd``, the uniformly thinned network of the same budget trained with the same KD.

The source (Ahmed, Zunino, Morerio, Murino, ICPR 2020; abstract only, no code) states: KD plus a
customizable block-wise optimisation learns a lightweight structure under a resource constraint (FLOPs or
parameters). Everything below is this project's design (docs/methods/structure.rst §Our design):

* Structure variables: the BatchNorm ``(gamma, beta)`` pair of every prunable channel (a plain bottleneck's
  conv1 / conv2 channels, an inverted residual's hidden channels): no extra modules. A channel whose pair is
  0 outputs exactly 0, so it is cut without changing the network.
* Resource-aware sparsity: the penalty ``lambda_k * sum_l c_l sum_c ||g_lc||`` with ``c_l`` the marginal
  deploy cost of one channel of layer l (:class:`~deap_lib.budget.ChannelCosts`, MACs or parameters at the
  run's input size, from the architecture; re-evaluated at the alive widths every step), applied as its
  exact proximal step after each optimizer step (channels reach exact zeros): every gate group shrinks by
  ``lambda * c_l / mean(c)`` in norm, except each gate's ``prune.min_channels`` largest, so no layer dies.
  A channel the step zeroes is removed for good: its group is held at zero after every later step (momentum
  would otherwise revive it), so the alive structure only shrinks. The weight adapts: while the alive
  structure costs more than its target the step is applied and ``lambda`` grows by ``exp(lambda_rate)``;
  at or below the target nothing shrinks and ``lambda`` stays. One weight per block-wise stage and one for
  the end-to-end phase (each starts at ``lambda_init``). The step is not scaled by the learning rate.
  Probes (cpu preset, 28 % MACs, seed 0) of an earlier form, the step times the learning rate, without the
  min-channel guard and without holding zeroed channels at zero: the warm-up fell on the block-wise phase,
  whose first three stages kept 99 % of their structure; then momentum revived zeroed channels, every
  revival counted as over budget, ``lambda`` grew without bound and emptied whole layers (alive 0.175 of
  the MACs, below the architecture's floor; mAP 9-13 % during training).
* Block-wise phase (``args.blockwise_frac`` of the run, split evenly over the stages that have prunable
  channels): stage k, started from the teacher's weights, takes the teacher's stage k-1 output and learns
  to reproduce the teacher's stage-k output (mean squared error relative to the target's mean square), only
  its own parameters training, under
  its share of the budget (``args.stage_shares``; default proportional to each stage's prunable cost).
* End-to-end phase: the whole network with the task losses and DEAP's KD terms (KL + per-block feature +
  ARKD), the penalty driven by the whole network's cost against the budget.
* Final cut: channels ranked by cost-normalised score ``||g|| / c_l`` fill the budget
  (:func:`~deap_lib.budget.budget_masks`: within one channel's cost of it), then the study's removal,
  BatchNorm re-calibration and float64-verified absorption.

The budget is ``prune.target_macs`` (a fraction of the unpruned network's cost) of ``prune.budget_kind``;
``prune.schedule`` and ``prune.allocation`` (DEAP's selection rules) do not apply to these two methods.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F

from ..absorb import prune, to_deploy
from ..budget import (ChannelCosts, alive_widths, budget_masks, check_budget, copy_weights, prunable_widths,
                      uniform_widths)
from ..export import save_compact
from ..losses.sparsity import gate_soft_threshold_
from ..models.gates import group_norms, zero_channels_
from ..rundir import RunDir
from .base import Method, UserError
from .mixins import DistillMixin
from .registry import register_method
from .kd import KD


def _budget_of(cfg) -> float:
    pc = cfg.prune
    if pc.target_macs is None:
        raise UserError(f"method '{cfg.method}' needs a budget: prune.target_macs (a fraction of the unpruned "
                        f"network's {pc.budget_kind}, e.g. --set prune.target_macs=0.4)")
    return float(pc.target_macs)


def _costs(cfg, net) -> ChannelCosts:
    try:
        return ChannelCosts(net, (3, *cfg.model.input_size), cfg.prune.budget_kind)
    except ValueError as e:  # an unknown budget kind
        raise UserError(f"prune.budget_kind: {e}") from None


def _check(budget: float, floor: float, kind: str) -> None:
    try:
        check_budget(budget, floor, kind)
    except ValueError as e:
        raise UserError(f"prune.target_macs: {e}") from None


@register_method
class StructureKD(DistillMixin, Method):
    name = "structure_kd"
    needs_teacher = True
    pcp = None
    prunes = True

    @dataclass
    class Args:
        blockwise_frac: float = 0.25  # share of the run spent in the block-wise phase (0: end to end only)
        stage_shares: Optional[List[float]] = None  # per stage with prunable channels; None: by prunable cost
        feature_weight: float = 1.0  # weight of the block-wise feature-matching MSE
        lambda_init: float = 1e-4  # initial shrinkage per step of a channel of mean cost (gate-norm units)
        lambda_rate: float = 0.1  # log-growth of lambda per step while over the target
        init_from_teacher: bool = True  # the student starts from the teacher's weights (docs/methods/structure.rst §Our design)

    def start(self) -> str:
        return "teacher" if self.args.init_from_teacher else super().start()

    def __init__(self, cfg, student, teacher=None, **kw):
        super().__init__(cfg, student, teacher, **kw)
        self._init_distill(cfg)
        a = self.args
        if not 0 <= a.blockwise_frac < 1:
            raise UserError(f"args.blockwise_frac must be in [0, 1), got {a.blockwise_frac}")
        if a.lambda_init <= 0 or a.lambda_rate < 0:
            raise UserError(f"args.lambda_init must be > 0 and args.lambda_rate >= 0, got {a.lambda_init}, "
                            f"{a.lambda_rate}")
        if a.init_from_teacher:
            try:
                copy_weights(self.teacher, self.net, "structure_kd (args.init_from_teacher)")
            except ValueError as e:
                raise UserError(str(e)) from None
        self.budget = _budget_of(cfg)
        self.costs = _costs(cfg, self.net)
        self.prunable = prunable_widths(self.net)
        if not any(self.prunable):
            raise UserError("structure_kd needs a plain student with BatchNorm gates (pcp=None)")
        _check(self.budget, self.costs.floor(self.prunable, cfg.prune.min_channels), self.costs.kind)
        self.blocks = [b for _, b in self.net.named_blocks()]
        self.groups = [g for g in self.net.backbone.block_groups() if any(self.prunable[b] for b in g)]
        self._unit = self._mean_cost(self.costs.full_widths)
        self.targets = self._stage_targets(a.stage_shares)
        # one penalty weight per block-wise stage and one (the last) for the end-to-end phase, and the
        # channels the penalty removed (one flag per gate channel, network order); both checkpointed
        self.register_buffer("lam", torch.full((len(self.groups) + 1,), float(a.lambda_init), dtype=torch.float64))
        self._slices, start = [], 0
        for blk in self.blocks:
            row = []
            for g in blk.gates():
                n = int(g.parts[0][0].shape[g.parts[0][1]])
                row.append(slice(start, start + n))
                start += n
            self._slices.append(row)
        self.register_buffer("dead", torch.zeros(start, dtype=torch.bool))
        self.phase: Any = None  # None: end to end; else the index of the stage being learned block-wise

    # ---------------------------------------------------------------- budget
    def _mean_cost(self, widths) -> float:
        m = self.costs.marginal(widths)
        vals = [m[b][i] for b, idx in enumerate(self.prunable) for i in idx]
        return sum(vals) / len(vals)

    def _stage_targets(self, shares) -> List[float]:
        """Each stage's cost target in the block-wise phase. The budget left after the ungated part of the
        network (stem, shortcuts, block outputs, head) must cover every stage's floor (one channel per
        prunable width); what remains above the floors is split by ``shares`` (default: by each stage's
        prunable cost, so every stage gives up the same share of what it can give up)."""
        c, full = self.costs, self.costs.full_widths
        gated = [c.block_cost(full, g) for g in self.groups]
        left = self.budget * c.full - (c.full - sum(gated))
        if shares is None:
            shares = gated
        shares = [float(s) for s in shares]
        if len(shares) != len(self.groups) or any(not s > 0 for s in shares):
            raise UserError(f"args.stage_shares must list {len(self.groups)} positive numbers (one per stage with "
                            f"prunable channels), got {shares}")
        low = [list(w) for w in full]
        for b, idx in enumerate(self.prunable):
            for i in idx:
                low[b][i] = min(low[b][i], self.cfg.prune.min_channels)
        floors = [c.block_cost(low, g) for g in self.groups]
        spare = max(0.0, left - sum(floors))
        return [f + spare * s / sum(shares) for f, s in zip(floors, shares)]

    def _over(self, widths) -> bool:
        if self.phase is None:
            return self.costs.fraction(widths) > self.budget
        return self.costs.block_cost(widths, self.groups[self.phase]) > self.targets[self.phase]

    # ---------------------------------------------------------------- training
    def _phase_at(self, ctx) -> Optional[int]:
        a, epochs = self.args, ctx.trainer.epochs
        it = (ctx.iteration - 1) / ctx.iters_per_epoch if ctx.iters_per_epoch else 0.0
        p = (ctx.epoch_index + it) / epochs
        if p >= a.blockwise_frac:
            return None
        return min(len(self.groups) - 1, int(p / a.blockwise_frac * len(self.groups)))

    def before_step(self, ctx) -> None:
        super().before_step(ctx)
        self.phase = self._phase_at(ctx)

    @torch.no_grad()
    def _teacher_stage(self, imgs, k: int):
        """The teacher's input to and output of the blocks of stage ``k``."""
        bb = self.teacher.backbone
        x = bb.stem_forward(imgs)
        first, last = self.groups[k][0], self.groups[k][-1]
        blocks = [b for _, b in bb.named_blocks()]
        for i in range(first):
            x = blocks[i](x)
        x_in = x
        for i in range(first, last + 1):
            x = blocks[i](x)
        return x_in, x

    def forward_train(self, batch):
        if self.phase is not None:
            x, target = self._teacher_stage(self.teacher_view(batch), self.phase)
            for b in self.groups[self.phase]:
                x = self.blocks[b](x)
            scale = target.pow(2).mean().clamp_min(1e-12)  # relative error: scale-free across stages
            return {"blockwise": self.args.feature_weight * F.mse_loss(x, target) / scale}
        imgs, pids = batch[0], batch[1]
        out_s, out_t = self.student(imgs), self.teacher_forward(self.teacher_view(batch))
        return {**self.task_terms(out_s, pids), **self.distill_terms(out_s, out_t)}

    @torch.no_grad()
    def _hold_dead(self) -> None:
        """Zero the groups of the channels the penalty removed."""
        for blk, row in zip(self.blocks, self._slices):
            for gate, sl in zip(blk.gates(), row):
                zero_channels_(gate, self.dead[sl])

    @torch.no_grad()
    def after_step(self, ctx) -> None:
        self._hold_dead()
        widths = alive_widths(self.net)
        if not self._over(widths):
            return
        k = len(self.groups) if self.phase is None else self.phase
        stages = range(len(self.groups)) if self.phase is None else [self.phase]
        marg, lam, m = self.costs.marginal(widths), float(self.lam[k]), self.cfg.prune.min_channels
        for s in stages:
            for b in self.groups[s]:
                for gate, sl in zip(self.blocks[b].gates(), self._slices[b]):
                    norms = group_norms(gate.parts)
                    keep = torch.zeros_like(norms, dtype=torch.bool)
                    keep[torch.topk(norms, min(m, norms.numel())).indices] = True
                    gate_soft_threshold_(gate.parts, lam * marg[b][gate.index] / self._unit, keep=keep)
                    self.dead[sl] |= (group_norms(gate.parts) == 0).to(self.dead.device)
        self.lam[k] *= math.exp(self.args.lambda_rate)

    def end_epoch(self, epoch: int):
        w = alive_widths(self.net)
        return {"alive_fraction": self.costs.fraction(w), "removed_share": float(self.dead.float().mean()),
                **{f"lambda_{i + 1}": float(v) for i, v in enumerate(self.lam[:-1])},
                "lambda_end_to_end": float(self.lam[-1])}

    # ---------------------------------------------------------------- compression
    def scores(self):
        """Cost-normalised channel scores ``||g|| / (c_l / mean c)`` at the alive widths."""
        marg = self.costs.marginal(alive_widths(self.net))
        return [tuple(group_norms(g.parts).detach().cpu() * self._unit / marg[b][g.index] for g in block.gates())
                for b, block in enumerate(self.blocks)]

    def compress(self, ctx) -> Dict[str, Any]:
        from ..compression import compress_student

        pc = self.cfg.prune
        alive = self.costs.fraction(alive_widths(self.net))
        masks, achieved = budget_masks(self.scores(), self.costs, self.budget, self.prunable,
                                       min_channels=pc.min_channels)
        rule = {"budget": self.budget, "budget_kind": self.costs.kind, "achieved_fraction": achieved,
                "alive_fraction_before_cut": alive, "selection": "cost-normalised score, budget prefix",
                "kept_channels": float(sum(int(m.sum()) for pair in masks for m in pair)),
                "total_channels": float(sum(m.numel() for pair in masks for m in pair))}
        return compress_student(self.net, pc, ctx.rec, ctx.data.recalib_batches, masks=masks, rule=rule)


@register_method
class ThinnedKD(KD):
    """``thinned_kd``: every prunable width scaled by one multiplier solved for the budget
    (:func:`~deap_lib.budget.uniform_widths`), the channels kept being each gate's largest BN pairs of the
    starting weights (the teacher's with ``args.init_from_teacher``, as ``structure_kd``), then trained with
    the same KD as ``kd``. The structure-learning baseline: same budget, same start, a uniform structure."""

    name = "thinned_kd"
    form = "absorbed"

    def start(self) -> str:
        return "teacher" if self.args.init_from_teacher else super().start()

    @dataclass
    class Args:
        init_from_teacher: bool = True

    def __init__(self, cfg, student, teacher=None, **kw):
        super().__init__(cfg, student, teacher, **kw)
        if student.config.get("pcp") is not None:
            raise UserError("thinned_kd needs a plain student (pcp=None)")
        if self.args.init_from_teacher:
            try:
                copy_weights(self.teacher, self.net, "thinned_kd (args.init_from_teacher)")
            except ValueError as e:
                raise UserError(str(e)) from None
        budget, costs = _budget_of(cfg), _costs(cfg, self.net)
        prunable = prunable_widths(self.net)
        _check(budget, costs.floor(prunable, cfg.prune.min_channels), costs.kind)
        widths, self.achieved = uniform_widths(costs, budget, prunable, min_channels=cfg.prune.min_channels)
        masks = []
        for (_, block), w in zip(self.net.named_blocks(), widths):
            masks.append(tuple(_top_mask(group_norms(g.parts).detach(), w[g.index]) for g in block.gates()))
        self.full_widths = [list(w) for w in self.net.block_widths()]
        self.student = prune(self.net, masks=masks)
        self.budget, self.kind = budget, costs.kind

    def compress(self, ctx) -> Dict[str, Any]:
        deploy = to_deploy(self.net)
        ctx.rec.add("absorbed", deploy)
        save_compact(deploy.cpu(), str(RunDir(ctx.out_dir).absorbed_path))
        return {"prune_rule": {"budget": self.budget, "budget_kind": self.kind, "achieved_fraction": self.achieved,
                               "selection": "uniform width multiplier"},
                "kept_widths": [list(w) for w in deploy.block_widths()], "original_widths": self.full_widths}


def _top_mask(norms: torch.Tensor, k: int) -> torch.Tensor:
    m = torch.zeros(norms.numel(), dtype=torch.bool)
    m[torch.sort(norms.cpu(), descending=True, stable=True).indices[:k]] = True
    return m
