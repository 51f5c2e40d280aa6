"""``deap``: Distillation Embedded Absorbable Pruning (the full method, METHODS 1.5 total loss):
L = CE + triplet + KL + 0.5 DL + ARKD + lambda1 lasso1 + lambda2 lasso2, then prune + absorb."""
from .base import DistillMixin, LassoMixin, Method


class DEAP(DistillMixin, LassoMixin, Method):
    name = "deap"
    needs_teacher = True
    pcp = "deap"
    prunes = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self._init_distill(cfg)

    def loss_terms(self, student, out_s, out_t, pids):
        return {**self.task_terms(out_s, pids), **self.distill_terms(out_s, out_t), **self.lasso_terms(student)}

    def post_step(self, student, lr):
        self.proximal_step(student, lr)
