"""Losses for DEAP and its baselines, plus the ``LOSSES`` registry (name -> nn.Module class).

Names: ``ce_ls``, ``triplet``, ``kl``, ``dl``, ``arkd`` (DEAP) and ``at``, ``fitnet``, ``rkd``, ``pkt``, ``sp``
(KD baselines). ``LOSSES.get("arkd")(alpha=10.0)`` builds one. Group lasso helpers are in ``sparsity``.
"""
from __future__ import annotations

from ..registry import Registry
from .distillation import ARKD, ARKDTerms, BlockFeatureLoss, KLDistill
from .identity import CrossEntropyLabelSmooth
from .metric import TripletLoss
from .relation import PKT, RKD, AttentionTransfer, FitNet, SimilarityPreserving
from .sparsity import LASSO_EPS, group_lasso, group_norms, proximal_group_soft_threshold_

LOSSES = Registry("loss")
LOSSES.register("ce_ls", CrossEntropyLabelSmooth)
LOSSES.register("triplet", TripletLoss)
LOSSES.register("kl", KLDistill)
LOSSES.register("dl", BlockFeatureLoss)
LOSSES.register("arkd", ARKD)
LOSSES.register("at", AttentionTransfer)
LOSSES.register("fitnet", FitNet)
LOSSES.register("rkd", RKD)
LOSSES.register("pkt", PKT)
LOSSES.register("sp", SimilarityPreserving)


def build_loss(name: str, **kwargs):
    """``LOSSES.get(name)(**kwargs)``; unknown names raise a KeyError listing the valid ones."""
    return LOSSES.get(name)(**kwargs)


__all__ = ["LOSSES", "build_loss", "CrossEntropyLabelSmooth", "TripletLoss", "KLDistill", "BlockFeatureLoss",
           "ARKD", "ARKDTerms", "AttentionTransfer", "FitNet", "RKD", "PKT", "SimilarityPreserving",
           "group_norms", "group_lasso", "proximal_group_soft_threshold_", "LASSO_EPS"]
