"""The sequential ways of combining KD and NP (the dilemma's other two corners).

* ``kd_then_np``: distil a plain student (``kd``), then insert identity pruners into it and prune it with
  ``np`` (group lasso, no KD) - NP gets the trained student it wants, but KD's knowledge is not protected
  while channels are removed.
* ``np_then_kd``: prune a student with ``np``, cut and re-calibrate it, then distil the compact student
  (``kd``, PCP kept, no lasso) - KD gets a student whose capacity was already removed.

Each stage runs ``optim.stage_frac`` x ``optim.epochs`` epochs with the whole warm-up / flat / cosine
schedule shape. The default (1.0) gives each stage the preset's whole schedule, so these baselines get
twice DEAP's training budget and any advantage DEAP shows is not a matter of more training; the cpu
preset halves the stages to fit its time budget, so there every method trains for the same epochs.
"""
from typing import Tuple


class Sequential:
    name = "sequential"
    stages: Tuple[str, str] = ("kd", "np")
    needs_teacher = True
    prunes = True


class KDThenNP(Sequential):
    name = "kd_then_np"
    stages = ("kd", "np")


class NPThenKD(Sequential):
    name = "np_then_kd"
    stages = ("np", "kd")
