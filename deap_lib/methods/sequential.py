"""The sequential ways of combining KD and NP (the dilemma's other two corners), as two-stage recipes.

* ``kd_then_np``: distil a plain student (``kd``), then insert identity pruners into it and prune it with
  ``np`` (group lasso, no KD) - NP gets the trained student it wants, but KD's knowledge is not protected
  while channels are removed.
* ``np_then_kd``: prune a student with ``np``, cut and re-calibrate it, then distil the compact student
  (``kd``, PCP kept, no lasso) - KD gets a student whose capacity was already removed.

Each stage runs ``optim.stage_frac`` x ``optim.epochs`` epochs (at least 2) with the whole warm-up / flat /
cosine schedule shape, in the run sub-folder ``stage<i>_<method>``. The default (1.0) gives each stage the
preset's whole schedule, so these baselines get twice DEAP's training budget and any advantage DEAP shows is
not a matter of more training; the cpu preset halves the stages to fit its time budget, so there every
method trains for the same epochs.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Tuple

from ..compression import compress_student, cut
from ..pruning import plain_to_pcp, recalibrate_bn
from .base import Method, RunContext, Stage, UserError
from .registry import register_method


def stage_config(cfg):
    """The config of one stage: ``round(stage_frac x epochs)`` epochs, at least 2."""
    if cfg.optim.stage_frac == 1.0:
        return cfg
    if not 0.0 < cfg.optim.stage_frac <= 1.0:
        raise UserError(f"optim.stage_frac must be in (0, 1], got {cfg.optim.stage_frac}")
    scfg = copy.deepcopy(cfg)
    scfg.optim.epochs = max(2, int(round(cfg.optim.epochs * cfg.optim.stage_frac)))
    return scfg


def _cut_and_recalibrate(method: Method, ctx: RunContext):
    """np -> kd hand-off: cut the NP student to the budget, re-calibrate BN, record it (``stage1_pruned``)."""
    pruned, rule = cut(method.net, ctx.cfg.prune, ctx.rec.input_size)
    recalibrate_bn(pruned, ctx.data.recalib_batches(ctx.cfg.prune.bn_recalib_batches), ctx.device)
    ctx.rec.add("stage1_pruned", pruned)
    ctx.extra["stage1_prune_rule"] = rule
    return pruned.train()


def _insert_pruners(method: Method, ctx: RunContext):
    """kd -> np hand-off: record the distilled student (``stage1_student``), insert identity pruners."""
    ctx.rec.add("stage1_student", method.net)
    return plain_to_pcp(method.net).train()


def _compress_precut(method: Method, ctx: RunContext) -> Dict[str, Any]:
    """np_then_kd: the student was cut before its last stage; ``unpruned`` is the stage-1 student."""
    return compress_student(method.net, ctx.cfg.prune, ctx.rec, ctx.data.recalib_batches,
                            unpruned=ctx.students[0])


class Sequential(Method):
    """A two-stage recipe: ``stages`` names the two methods in order."""

    name = "sequential"
    order: Tuple[str, str] = ("kd", "np")
    needs_teacher = True
    prunes = True

    @classmethod
    def stages(cls, cfg) -> List[Stage]:
        from .registry import METHODS

        scfg = stage_config(cfg)
        first, second = (METHODS.get(n) for n in cls.order)
        if first.prunes:  # np_then_kd
            return [Stage(first, scfg, f"stage1_{first.name}", handoff=_cut_and_recalibrate),
                    Stage(second, scfg, f"stage2_{second.name}", compress=_compress_precut)]
        return [Stage(first, scfg, f"stage1_{first.name}", handoff=_insert_pruners),
                Stage(second, scfg, f"stage2_{second.name}")]


@register_method
class KDThenNP(Sequential):
    name = "kd_then_np"
    order = ("kd", "np")


@register_method
class NPThenKD(Sequential):
    name = "np_then_kd"
    order = ("np", "kd")
