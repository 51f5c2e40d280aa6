"""The relation-KD slot of DEAP's objective: ARKD, or one of the field's KD losses in its place.

DEAP's total loss is CE + triplet + KL + DL + **ARKD** + lasso; ``loss.relation`` names what fills the ARKD
term (docs/methods/deap.rst §Losses item 5), so that the paper's claim "ARKD transfers feature and relation
knowledge without adaptation modules" can be tested against the losses the field uses:

* ``arkd`` (DEAP's; weight ``loss.arkd_weight``) on the stage-3/4 maps;
* ``at`` (attention transfer), ``sp`` (similarity preserving) and ``fitnet`` (hints through a trained
  1x1 conv + BN + ReLU regressor per map, the only adaptation module here) on the same two maps;
* ``rkd`` (distance + angle) and ``pkt`` on the retrieval embedding (the penultimate feature, where the
  field's benchmark applies them);
* ``none``: no term (KL and DL alone).

Each of the field's losses is scaled as in the common CIFAR-100 KD benchmark (RepDistiller's ``-b``: FitNet
100, AT 1000, SP 3000, RKD 1, PKT 30000), computed in that benchmark's normalisation (AT: per map the mean
over samples and positions, summed over maps, i.e. :class:`~deap_lib.losses.AttentionTransfer` / HW; the
others as implemented); ``loss.relation_weight`` overrides the weight.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from ._common import match_spatial
from .distillation import ARKD
from .relation import PKT, RKD, AttentionTransfer, FitNet, SimilarityPreserving


@dataclass(frozen=True)
class SlotLoss:
    """What a loss in the slot reads (``stage_maps`` or ``embedding``) and its default weight."""
    inputs: Optional[str]
    weight: float


#: the losses the slot takes (``loss.relation``), with their inputs and default weights
SLOT_LOSSES: Dict[str, SlotLoss] = {
    "arkd": SlotLoss("stage_maps", 1.0),  # DEAP: loss.arkd_weight
    "at": SlotLoss("stage_maps", 1000.0),
    "sp": SlotLoss("stage_maps", 3000.0),
    "fitnet": SlotLoss("stage_maps", 100.0),
    "rkd": SlotLoss("embedding", 1.0),
    "pkt": SlotLoss("embedding", 30000.0),
    "none": SlotLoss(None, 0.0),
}


def conv_regressor(c_in: int, c_out: int) -> nn.Sequential:
    """FitNet's hint regressor as the field's benchmark builds it for maps of one size: 1x1 conv, BN, ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=False))


class RelationSlot(nn.Module):
    """``weight x loss(student, teacher)`` for the loss named ``name`` (:data:`SLOT_LOSSES`).

    ``map_channels``: (student, teacher) channels of each stage map, needed by ``fitnet`` only (its regressors
    are sub-modules: trained, checkpointed and left out of the deployed student)."""

    def __init__(self, name: str, weight: Optional[float] = None, *, arkd_alpha: float = 10.0,
                 arkd_beta: float = 1.0, map_channels: Sequence[Sequence[int]] = ()):
        super().__init__()
        if name not in SLOT_LOSSES:
            raise ValueError(f"loss.relation: unknown '{name}'; valid: {', '.join(SLOT_LOSSES)}")
        self.name = name
        self.inputs = SLOT_LOSSES[name].inputs
        self.weight = float(SLOT_LOSSES[name].weight if weight is None else weight)
        if name == "arkd":
            self.loss: Optional[nn.Module] = ARKD(alpha=arkd_alpha, beta=arkd_beta)
        elif name == "fitnet":
            if not map_channels:
                raise ValueError("loss.relation='fitnet' needs the stage maps' channels for its regressors")
            self.loss = FitNet([conv_regressor(int(cs), int(ct)) for cs, ct in map_channels])
        else:
            self.loss = {"at": AttentionTransfer, "sp": SimilarityPreserving, "rkd": RKD, "pkt": PKT,
                         "none": lambda: None}[name]()

    def active(self) -> bool:
        return self.loss is not None and self.weight != 0.0

    def adaptation_parameters(self) -> int:
        """Trainable parameters the loss adds beside the student (FitNet's regressors; 0 for the others)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, student, teacher) -> Tensor:
        """``student`` / ``teacher``: the two nets' :class:`~deap_lib.models.ReIDOutput`."""
        s, t = getattr(student, self.inputs), getattr(teacher, self.inputs)
        if self.name == "at":  # the benchmark's normalisation: mean over samples and positions, summed over maps
            return self.weight * sum(self.loss([a], [b]) / _positions(a, b) for a, b in zip(s, t))
        return self.weight * self.loss(s, t)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, weight={self.weight}"


def _positions(s: Tensor, t: Tensor) -> int:
    a, _ = match_spatial(s, t)
    return int(a.shape[-2] * a.shape[-1])


def stage_map_channels(student: nn.Module, teacher: nn.Module, input_size: Sequence[int]) -> List[List[int]]:
    """(student, teacher) channels of each stage map, from one no-grad forward of a zero image through both
    in eval mode (modes restored; no statistics change)."""
    pairs = []
    x = torch.zeros(1, *input_size)
    outs = []
    for net in (student, teacher):
        was = net.training
        p = next(net.parameters())
        try:
            net.eval()
            with torch.no_grad():
                outs.append([m.shape[1] for m in net.forward_features(x.to(p.device, p.dtype)).stage_maps])
        finally:
            net.train(was)
    for cs, ct in zip(*outs):
        pairs.append([int(cs), int(ct)])
    return pairs
