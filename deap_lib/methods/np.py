"""``np``: network pruning alone - PCP pruners + group lasso, no distillation, then absorb."""
from .base import Method
from .mixins import PruningMixin
from .registry import register_method


@register_method
class NP(PruningMixin, Method):
    name = "np"
    pcp = "deap"
    prunes = True

    def __init__(self, cfg, student, teacher=None, **kw):
        super().__init__(cfg, student, teacher, **kw)
        self._init_pruning(cfg)

    def forward_train(self, batch):
        imgs, pids = batch[0], batch[1]
        return {**self.task_terms(self.student(imgs), pids), **self.lasso_terms(self.net)}
