"""``kd``: the student distilled with DEAP's losses (KL + DL + ARKD), no pruning."""
from .base import Method
from .mixins import DistillMixin
from .registry import register_method


@register_method
class KD(DistillMixin, Method):
    name = "kd"
    needs_teacher = True

    def __init__(self, cfg, student, teacher=None, **kw):
        super().__init__(cfg, student, teacher, **kw)
        self._init_distill(cfg)

    def forward_train(self, batch):
        imgs, pids = batch[0], batch[1]
        out_s, out_t = self.student(imgs), self.teacher_forward(self.teacher_view(batch))
        return {**self.task_terms(out_s, pids), **self.distill_terms(out_s, out_t)}
