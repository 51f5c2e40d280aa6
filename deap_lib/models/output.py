"""The training-mode output contract of every re-ID network (docs/methods/deap.rst §Head and embeddings)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from torch import Tensor


@dataclass
class ReIDOutput:
    """Everything the DEAP losses need from one forward pass.

    * ``logits`` (B, num_classes): the bias-free classifier's output (CE, KL).
    * ``global_feat`` (B, C_g): GAP of the stage-4 map, un-normalised (triplet loss).
    * ``embedding`` (B, D): the retrieval embedding (ClassBlock: the 512-d BN1d output; BNNeck: the BN output).
    * ``stage_maps``: [stage-3 output, stage-4 output], post-ReLU (relation KD).
    * ``block_feats``: per residual block, GAP of the block output after the residual addition and before
      the final ReLU, each (B, C_l), in network order (per-block feature loss DL).
    * ``mid_feats``: per block, GAP of the internal 3x3 conv's BN-ed output before any output-side pruner
      and before its ReLU, each (B, planes) (CDD's FIT feature; the teacher's conv2 + BN2 output).
    * ``gated_feats``: per block, GAP of the output-side pruner / compactor's output before the ReLU (CDD's
      gradient-resetting vector); the same tensors as ``mid_feats`` for blocks without one.
    """

    logits: Tensor
    global_feat: Tensor
    embedding: Tensor
    stage_maps: List[Tensor] = field(default_factory=list)
    block_feats: List[Tensor] = field(default_factory=list)
    mid_feats: List[Tensor] = field(default_factory=list)
    gated_feats: List[Tensor] = field(default_factory=list)
