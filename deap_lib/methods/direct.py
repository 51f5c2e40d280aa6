"""``kd_np_direct``: the naive simultaneous combination of KD and NP that DEAP's dilemma is about.

The student has no extra pruners: a group lasso acts on its *own* channels - the BN gates of every block
(the ``(gamma, beta)`` pairs of conv1-BN and conv2-BN: a channel whose pair is 0 outputs exactly 0 after
its ReLU, :func:`~deap_lib.pruning.gate_lasso`) - while it is distilled with the same KL + DL + ARKD losses.
After training the weakest channels are removed structurally (conv1 outputs / conv2 inputs, conv2 outputs /
conv3 inputs) by the same selection, cutting and absorption code as DEAP, through the blocks' BN gates.
"""
from ..pruning import gate_lasso
from .base import Method
from .mixins import DistillMixin, PruningMixin
from .registry import register_method


@register_method
class KDNPDirect(DistillMixin, PruningMixin, Method):
    name = "kd_np_direct"
    needs_teacher = True
    pcp = None
    prunes = True

    def __init__(self, cfg, student, teacher=None, **kw):
        super().__init__(cfg, student, teacher, **kw)
        self._init_distill(cfg)
        self._init_pruning(cfg)

    def forward_train(self, batch):
        imgs, pids = batch[0], batch[1]
        lc = self.cfg.loss
        out_s, out_t = self.student(imgs), self.teacher_forward(self.teacher_view(batch))
        terms = {**self.task_terms(out_s, pids), **self.distill_terms(out_s, out_t)}
        terms["bn_lasso"] = self.lasso_scale() * lc.lasso1 * gate_lasso(self.net, eps=lc.lasso_eps)
        return terms
