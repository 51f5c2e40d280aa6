"""``teacher`` and ``student``: the plain re-ID recipe (CE-LS + triplet), no distillation, no pruning."""
from .base import Method
from .registry import register_method


@register_method
class Teacher(Method):
    """The heavy model every distillation method learns from (trained like the student, recorded as
    form ``teacher``). The released code ships no teacher script; docs/decisions.rst §Open questions records our assumption."""

    name = "teacher"
    form = "teacher"


@register_method
class Pretrain(Method):
    """The stand-in for ImageNet pre-training (ours; docs/methods/deap.rst §PCP unit: the paper starts teacher and student from
    ImageNet weights): identity classification (CE-LS + triplet) of a generic backbone on a corpus disjoint
    from the benchmark by construction - the preset's ``pretrain`` synthetic set, generated from its own
    stream (other identities, other camera styles) with harsher nuisances (a domain shift). Trained once per
    study; runs with ``student_init="checkpoint"`` start from its backbone (the head starts fresh). Its own
    data: a study's data overrides do not apply to it (``own_data``). Recorded as form ``pretrained``
    (evaluated on the corpus's own test split, never a row of the benchmark's tables)."""

    name = "pretrain"
    form = "pretrained"
    own_data = True


@register_method
class Student(Method):
    """The student architecture trained alone: the no-KD, no-pruning baseline."""

    name = "student"
