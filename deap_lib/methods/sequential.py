"""The sequential ways of combining KD and NP (the dilemma's other two corners).

* ``kd_then_np``: distil a plain student (``kd``), then insert identity pruners into it and prune it with
  ``np`` (group lasso, no KD) - NP gets the trained student it wants, but KD's knowledge is not protected
  while channels are removed.
* ``np_then_kd``: prune a student with ``np``, cut and re-calibrate it, then distil the compact student
  (``kd``, PCP kept, no lasso) - KD gets a student whose capacity was already removed.

Each stage runs the preset's full schedule, so these baselines get twice DEAP's training budget: any
advantage DEAP shows is not a matter of more training.
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
