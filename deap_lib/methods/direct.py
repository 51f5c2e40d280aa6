"""``kd_np_direct``: the naive simultaneous combination of KD and NP that DEAP's dilemma is about.

The student has no extra pruners: a group lasso acts on its *own* channels - the ``(gamma, beta)`` pairs of
every bottleneck's conv1-BN and conv2-BN (a channel whose pair is 0 outputs exactly 0 after its ReLU) -
while it is distilled with the same KL + DL + ARKD losses. After training the weakest channels are removed
structurally (conv1 outputs / conv2 inputs, conv2 outputs / conv3 inputs) by the same selection and
absorption code as DEAP, via identity pruners inserted into the trained network.
"""
from ..pruning import bn_channel_lasso
from .base import DistillMixin, LassoMixin, Method


class KDNPDirect(DistillMixin, LassoMixin, Method):
    name = "kd_np_direct"
    needs_teacher = True
    pcp = None
    prunes = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self._init_distill(cfg)

    def loss_terms(self, student, out_s, out_t, pids):
        lc = self.cfg.loss
        terms = {**self.task_terms(out_s, pids), **self.distill_terms(out_s, out_t)}
        terms["bn_lasso"] = self.lasso_scale() * lc.lasso1 * bn_channel_lasso(student, eps=lc.lasso_eps)
        return terms
