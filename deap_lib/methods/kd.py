"""``kd``: the student distilled with DEAP's losses (KL + DL + ARKD), no pruning."""
from .base import DistillMixin, Method


class KD(DistillMixin, Method):
    name = "kd"
    needs_teacher = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self._init_distill(cfg)

    def loss_terms(self, student, out_s, out_t, pids):
        return {**self.task_terms(out_s, pids), **self.distill_terms(out_s, out_t)}
