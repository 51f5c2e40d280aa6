"""``teacher`` and ``student``: the plain re-ID recipe (CE-LS + triplet), no distillation, no pruning."""
from .base import Method


class Teacher(Method):
    """The heavy model every distillation method learns from (trained like the student, recorded as
    form ``teacher``). The released code ships no teacher script; METHODS 6.1 records our assumption."""

    name = "teacher"
    form = "teacher"


class Student(Method):
    """The student architecture trained alone: the no-KD, no-pruning baseline."""

    name = "student"
