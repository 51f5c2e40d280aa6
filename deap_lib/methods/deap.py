"""``deap``: Distillation Embedded Absorbable Pruning (the full method, docs/methods/deap.rst §Losses total loss):
L = CE + triplet + KL + 0.5 DL + ARKD + lambda1 lasso1 + lambda2 lasso2, then prune + absorb."""
from .base import Method
from .mixins import DistillMixin, PruningMixin
from .registry import register_method


@register_method
class DEAP(DistillMixin, PruningMixin, Method):
    name = "deap"
    needs_teacher = True
    pcp = "deap"
    prunes = True

    def __init__(self, cfg, student, teacher=None, **kw):
        super().__init__(cfg, student, teacher, **kw)
        self._init_distill(cfg)
        self._init_pruning(cfg)

    def forward_train(self, batch):
        imgs, pids = batch[0], batch[1]
        out_s = self.student(imgs)
        out_t = self.teacher_forward(self.teacher_view(batch))
        return {**self.task_terms(out_s, pids), **self.distill_terms(out_s, out_t), **self.lasso_terms(self.net)}
