"""Re-ID heads on the global feature g = GAP(stage 4) (docs/methods/deap.rst §Head and embeddings).

Each head maps g (B, C_g) to ``(embedding, logits)``; the classifier is bias-free and only needed for
training. Batch size 1 in train mode: BatchNorm1d cannot use batch statistics of a single sample, so the
heads then normalise with the running statistics (and do not update them); with B >= 2 they behave exactly
like ``nn.BatchNorm1d`` in train mode.
"""
from __future__ import annotations

from typing import Tuple

import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Registry

HEADS: Registry = Registry("head")


def _bn1d(bn: nn.BatchNorm1d, x: Tensor) -> Tensor:
    """``bn(x)``, falling back to running statistics for a single-sample training batch."""
    if bn.training and x.shape[0] == 1:
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    return bn(x)


def _init_classifier(linear: nn.Linear) -> None:
    nn.init.normal_(linear.weight, std=0.001)


@HEADS.register("classblock")
class ClassBlock(nn.Module):
    """g -> BN1d(C_g) -> ReLU -> Linear(C_g -> D, no bias) -> BN1d(D) = embedding f -> classifier (no bias).

    Init (docs/methods/deap.rst §Head and embeddings): BN weight 1, bias 0; the C_g -> D linear Kaiming-normal (a=0, fan_out); the
    classifier N(0, 0.001^2). The embedding is the D-dim BN1d output.
    """

    def __init__(self, in_dim: int, num_classes: int, embed_dim: int = 512):
        super().__init__()
        self.bn_in = nn.BatchNorm1d(in_dim)
        self.fc = nn.Linear(in_dim, embed_dim, bias=False)
        self.bn_out = nn.BatchNorm1d(embed_dim)
        self.classifier = nn.Linear(embed_dim, num_classes, bias=False)
        self.embed_dim = embed_dim
        for bn in (self.bn_in, self.bn_out):
            nn.init.ones_(bn.weight)
            nn.init.zeros_(bn.bias)
        nn.init.kaiming_normal_(self.fc.weight, a=0, mode="fan_out")
        _init_classifier(self.classifier)

    def embed(self, g: Tensor) -> Tensor:
        return _bn1d(self.bn_out, self.fc(F.relu(_bn1d(self.bn_in, g))))

    def forward(self, g: Tensor) -> Tuple[Tensor, Tensor]:
        f = self.embed(g)
        return f, self.classifier(f)


@HEADS.register("bnneck")
class BNNeck(nn.Module):
    """g -> BN1d(C_g) = embedding -> classifier (no bias); the BN shift is frozen (bias not trained), as in
    the usual BNNeck. ``embed_dim`` is ignored: the embedding has C_g dimensions."""

    def __init__(self, in_dim: int, num_classes: int, embed_dim: int = 512):
        super().__init__()
        self.bn = nn.BatchNorm1d(in_dim)
        self.bn.bias.requires_grad_(False)
        self.classifier = nn.Linear(in_dim, num_classes, bias=False)
        self.embed_dim = in_dim
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        _init_classifier(self.classifier)

    def embed(self, g: Tensor) -> Tensor:
        return _bn1d(self.bn, g)

    def forward(self, g: Tensor) -> Tuple[Tensor, Tensor]:
        f = self.embed(g)
        return f, self.classifier(f)
