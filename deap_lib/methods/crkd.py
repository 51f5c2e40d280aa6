"""``crkd``: resolution-aware (cross-resolution) KD, an HR teacher distilled into an LR student (docs/methods/crkd.rst).

The source (IEEE TIP 2021; abstract only, no code) states the frame: a high-resolution teacher, a
low-resolution student, a discriminator trained adversarially against the resolution gap of the features,
and a cross-resolution KD loss made of a resolution-aware distillation loss, a pair-wise constraint and an
MMD loss. Everything below that is this project's design (docs/methods/crkd.rst §Our design):

* data: paired views (:mod:`deap_lib.resolution`): the student sees the LR view (``model.input_size``) of
  each image augmented at HR (``data.hr_size``, the teacher's input);
* student loss: CE + triplet (the task) + ``kl`` x KL(T(s)) T(s)^2 with T(s) = T0 / s (T0 = ``loss.kl_T``,
  s the linear scale LR / HR; ``temperature="fixed"``: T0) + ``embed`` x ||n(f_s) - n(f_t)||^2 +
  ``pairwise`` x the similarity-matrix term + ``mmd`` x MMD^2 of the normalised embeddings
  (:mod:`deap_lib.losses.cross_resolution`) + ``adversarial`` x -log D(n(f_s)) (non-saturating);
* discriminator D (``discriminator=True``): an MLP dim -> ``disc_hidden`` -> 1 on L2-normalised embeddings,
  teacher-HR "real", student-LR "fake", binary cross-entropy, its own Adam (``disc_lr``). Alternating
  updates on each batch: the student step (D's weights enter it as constants, so the adversarial term's
  gradient reaches only the student), then D's step on that batch's detached features. D and its optimizer
  are in the run's checkpoint.

Not the relational-KD loss ``RKD`` (:class:`deap_lib.losses.RKD`). Every term is a switch (weight 0 or
``discriminator=False``), so an ablation is a config change: ``--set args.mmd=0``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..engine import OptimizerSpec
from ..losses import KLDistill
from ..losses.cross_resolution import (embedding_l2, mmd2_unbiased, pairwise_similarity_loss,
                                       resolution_temperature)
from ..config import hr_size, scale_of
from .base import Method, UserError
from .registry import register_method

TEMPERATURE_RULES = ("gap", "fixed")


@dataclass
class CRKDArgs:
    kl: float = 1.0  # resolution-aware KL on logits
    embed: float = 1.0  # L2 of the normalised embeddings (the resolution-aware distillation's feature part)
    pairwise: float = 1.0  # student-LR x teacher-HR cosine matrix matches the teacher's own
    mmd: float = 1.0  # unbiased multi-kernel MMD^2 of the normalised embeddings
    discriminator: bool = True  # adversarial alignment with a discriminator
    adversarial: float = 0.1  # weight of -log D(f_s) in the student loss (ours)
    temperature: str = "gap"  # "gap": T0 / s; "fixed": T0
    disc_hidden: int = 256
    disc_lr: float = 1e-3


class Discriminator(nn.Module):
    """D(f) = logit that an L2-normalised embedding comes from the HR teacher: Linear -> LeakyReLU(0.2) ->
    Linear."""

    def __init__(self, dim: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f).squeeze(1)


@register_method
class CrossResolutionKD(Method):
    name = "crkd"
    needs_teacher = True
    Args = CRKDArgs

    def __init__(self, cfg, student, teacher=None, **kw):
        super().__init__(cfg, student, teacher, **kw)
        a = self.args
        for f in fields(a):
            v = getattr(a, f.name)
            if isinstance(v, float) and v < 0:
                raise UserError(f"args.{f.name} must be >= 0, got {v}")
        if a.temperature not in TEMPERATURE_RULES:
            raise UserError(f"args.temperature must be one of {TEMPERATURE_RULES}, got {a.temperature!r}")
        if a.disc_hidden < 1 or a.disc_lr <= 0:
            raise UserError(f"args.disc_hidden must be >= 1 and args.disc_lr > 0, got {a.disc_hidden}, {a.disc_lr}")
        ds, dt = student.config.get("embed_dim"), self.teacher.config.get("embed_dim")
        if ds != dt:
            raise UserError(f"crkd compares embeddings: the student's has {ds} dimensions (model.embed_dim), the "
                            f"teacher's ({cfg.teacher_path}) {dt}; train the student with model.embed_dim={dt}")
        #: the linear scale s of the student's input against the teacher's
        self.scale = scale_of(cfg.model.input_size, hr_size(cfg))
        if self.scale > 1:
            raise UserError(f"crkd: the student's input {tuple(cfg.model.input_size)} is larger than the teacher's "
                            f"(data.hr_size {hr_size(cfg)}); the LR side must be the student's")
        T0 = cfg.loss.kl_T
        self.T = resolution_temperature(T0, self.scale) if a.temperature == "gap" else float(T0)
        self.kl = KLDistill(T=self.T)
        self.disc = Discriminator(ds, a.disc_hidden) if a.discriminator else None
        self._pair = None  # (real, fake) detached features of the current batch, for D's step

    def forward_train(self, batch):
        a = self.args
        imgs, pids = batch[0], batch[1]
        out_s = self.student(imgs)
        out_t = self.teacher_forward(self.teacher_view(batch))
        s, t = out_s.embedding, out_t.embedding
        terms = self.task_terms(out_s, pids)
        if a.kl:
            terms["kl"] = a.kl * self.kl(out_s.logits, out_t.logits)
        if a.embed:
            terms["embed"] = a.embed * embedding_l2(s, t)
        if a.pairwise:
            terms["pairwise"] = a.pairwise * pairwise_similarity_loss(s, t)
        ns, nt = F.normalize(s.float(), dim=1), F.normalize(t.detach().float(), dim=1)
        if a.mmd:
            terms["mmd"] = a.mmd * mmd2_unbiased(ns, nt)
        if self.disc is not None:
            self._pair = (nt, ns.detach())
            frozen = {k: v.detach() for k, v in self.disc.named_parameters()}
            logit = functional_call(self.disc, frozen, (ns,))
            terms["adv"] = a.adversarial * F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))
        return terms

    def discriminator_terms(self, batch):
        """D's step on the batch's detached features: BCE(D(teacher), 1) + BCE(D(student), 0)."""
        real, fake = self._pair
        lr, lf = self.disc(real), self.disc(fake)
        return {"bce": F.binary_cross_entropy_with_logits(lr, torch.ones_like(lr))
                + F.binary_cross_entropy_with_logits(lf, torch.zeros_like(lf))}

    def configure_optimizers(self):
        specs = super().configure_optimizers()
        if self.disc is None:
            return specs
        adam = torch.optim.Adam(self.disc.parameters(), lr=self.args.disc_lr, betas=(0.5, 0.999))
        return specs + [OptimizerSpec("disc", adam, step_fn=self.discriminator_terms)]
