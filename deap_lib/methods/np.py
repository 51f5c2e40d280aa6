"""``np``: network pruning alone - PCP pruners + group lasso, no distillation, then absorb."""
from .base import LassoMixin, Method


class NP(LassoMixin, Method):
    name = "np"
    pcp = "deap"
    prunes = True

    def loss_terms(self, student, out_s, out_t, pids):
        return {**self.task_terms(out_s, pids), **self.lasso_terms(student)}

    def post_step(self, student, lr):
        self.proximal_step(student, lr)
