"""ConvBN ResNets (torchvision v1.5 layout) for re-ID, with optional PCP units, and ``build_model``.

Stem: 7x7/2 conv + BN + ReLU, max-pool 3/2/1; stages 1-4 with strides 1, 2, 2, ``last_stride`` (the stride
sits on the 3x3 conv of a stage's first block; a 1x1 conv + BN shortcut wherever stride != 1 or the channel
count changes). Width multiplier ``width``: every stage and the stem are scaled,
``channels = max(1, int(round(c * width)))`` with c = 64 for the stem and planes = 64/128/256/512 for
stages 1-4 (block outputs = expansion * scaled planes).
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Type, Union

import torch
from torch import Tensor, nn

from ..registry import Registry
from .blocks import BasicBlock, Bottleneck, _check_pcp
from .convbn import ConvBN, StemMaxPool, gap, nhwc_grad
from .gates import group_norms
from .heads import HEADS
from .mobilenet import InvertedResidual, MobileNetV2Backbone
from .output import ReIDOutput

Block = Union[Bottleneck, BasicBlock, InvertedResidual]


@dataclass(frozen=True)
class ArchSpec:
    block: Type[nn.Module]
    layers: Tuple[int, int, int, int]


MODELS: Registry = Registry("model")
MODELS.register("resnet18", ArchSpec(BasicBlock, (2, 2, 2, 2)))
MODELS.register("resnet34", ArchSpec(BasicBlock, (3, 4, 6, 3)))
MODELS.register("resnet50", ArchSpec(Bottleneck, (3, 4, 6, 3)))
MODELS.register("resnet101", ArchSpec(Bottleneck, (3, 4, 23, 3)))
MODELS.register("resnet152", ArchSpec(Bottleneck, (3, 8, 36, 3)))
#: torchvision's MobileNetV2 (no weights), prunable inverted residuals (:mod:`deap_lib.models.mobilenet`)
MODELS.register("mobilenet_v2", MobileNetV2Backbone)

BASE_PLANES = (64, 128, 256, 512)
STEM_CHANNELS = 64


def scale_channels(channels: int, width: float) -> int:
    """The width-multiplier rule: ``max(1, int(round(channels * width)))``."""
    return max(1, int(round(channels * width)))


class ResNetBackbone(nn.Module):
    """Stem + four stages of residual blocks; ``forward`` returns ``(stage3, stage4, block_sums_gap)``."""

    def __init__(self, spec: ArchSpec, width: float = 1.0, last_stride: int = 1, pcp: Optional[str] = None,
                 widths: Optional[Sequence[Sequence[int]]] = None, deploy: bool = False):
        super().__init__()
        if width <= 0:
            raise ValueError(f"width multiplier must be > 0, got {width}")
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        n_blocks = sum(spec.layers)
        if widths is not None and len(widths) != n_blocks:
            raise ValueError(f"widths must list one entry per block ({n_blocks} blocks), got {len(widths)}")
        stem_ch = scale_channels(STEM_CHANNELS, width)
        self.stem = ConvBN(3, stem_ch, 7, stride=2, padding=3, relu=True, deploy=deploy)
        self.maxpool = StemMaxPool()
        in_ch, k = stem_ch, 0
        strides = (1, 2, 2, last_stride)
        for s, (base, n, stride) in enumerate(zip(BASE_PLANES, spec.layers, strides), start=1):
            planes = scale_channels(base, width)
            blocks = []
            for i in range(n):
                w = None if widths is None else widths[k]
                blocks.append(spec.block(in_ch, planes, stride if i == 0 else 1, pcp=pcp, widths=w,
                                         deploy=deploy))
                in_ch = planes * spec.block.expansion
                k += 1
            self.add_module(f"stage{s}", nn.Sequential(*blocks))
        self.out_channels = in_ch

    def stages(self) -> List[nn.Sequential]:
        return [self.stage1, self.stage2, self.stage3, self.stage4]

    def fixed_convs(self) -> List[Tuple[str, ConvBN]]:
        """The ConvBNs outside the blocks (never cut; folded at deploy): the stem."""
        return [("stem", self.stem)]

    def stem_forward(self, x: Tensor) -> Tensor:
        """The input of the first block (stem conv and max-pool)."""
        return self.maxpool(self.stem(x))

    def block_groups(self) -> List[List[int]]:
        """Indices (``named_blocks()`` order) of the blocks of each stage: the block-wise phase's units."""
        out, k = [], 0
        for stage in self.stages():
            out.append(list(range(k, k + len(stage))))
            k += len(stage)
        return out

    def named_blocks(self) -> Iterator[Tuple[str, Block]]:
        for s, stage in enumerate(self.stages(), start=1):
            for i, block in enumerate(stage):
                yield f"stage{s}.{i}", block

    def forward(self, x: Tensor, collect: bool = False, conv2: bool = True
                ) -> Tuple[Tensor, Tensor, Dict[str, List[Tensor]]]:
        """``(stage-3 map, stage-4 map, pooled)``. ``collect=True`` fills ``pooled`` with per-block GAP
        vectors, each (B, C): ``"sum"`` of the pre-ReLU residual sums and, with ``conv2``, ``"mid"`` /
        ``"gated"`` of the conv2-level maps (:class:`~deap_lib.models.blocks.BlockTrace`); empty otherwise."""
        x = self.maxpool(self.stem(x))
        pooled: Dict[str, List[Tensor]] = {"sum": [], "mid": [], "gated": []} if collect else {}
        maps: List[Tensor] = []
        for stage in self.stages():
            for block in stage:
                if collect and not conv2:
                    x, p = block.forward_pooled(x, gap)
                    pooled["sum"].append(p)
                elif collect:
                    t = block.forward_trace(x)
                    x = t.out
                    pooled["sum"].append(gap(t.sum))
                    if conv2:
                        pooled["mid"].append(gap(t.mid))
                        pooled["gated"].append(gap(t.gated) if t.gated is not t.mid
                                               else pooled["mid"][-1])
                else:
                    x = block(x)
            maps.append(x)
        return maps[2], maps[3], pooled


def _float32(t: Tensor):
    """No autocast on ``t``'s device inside (the head runs in float32 under mixed precision: at this size its
    cost is nil, and bf16's 8-bit mantissa would round logits of ~10 by ~0.06)."""
    if t.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(t.device.type):
        return torch.autocast(device_type=t.device.type, enabled=False)
    return contextlib.nullcontext()


def _wide(t: Tensor) -> Tensor:
    """``t`` in float32 when it is a 16-bit float (autocast's output); float32 / float64 unchanged."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


class ReIDNet(nn.Module):
    """Backbone + re-ID head. Eval mode: ``forward(x)`` -> embedding (B, D). Train mode: a ``ReIDOutput``.

    ``config`` holds the plain-typed arguments of :func:`build_model` that rebuild this exact network
    (including per-block ``widths`` and the ``deploy`` flag); :mod:`deap_lib.export` saves it with the weights.
    """

    def __init__(self, backbone: ResNetBackbone, head: nn.Module, config: Dict[str, Any]):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.config = dict(config)

    # ---------------------------------------------------------------- forward
    #: compute ``mid_feats`` / ``gated_feats`` (CDD's conv2-level vectors); a method that reads none of them
    #: switches it off (:class:`~deap_lib.methods.base.Method`), saving two GAPs per block and pass
    collect_conv2: bool = True

    def forward_features(self, x: Tensor) -> ReIDOutput:
        """All training outputs, in any mode (e.g. a frozen teacher kept in eval mode); ``mid_feats`` /
        ``gated_feats`` empty when :attr:`collect_conv2` is off."""
        s3, s4, pooled = self.backbone(x, collect=True, conv2=self.collect_conv2)
        with _float32(s4):  # GAP and head in float32 under mixed precision: bf16 logits step by ~0.1
            g = gap(_wide(s4))
            f, logits = self.head(g)
        return ReIDOutput(logits=logits, global_feat=g, embedding=f, stage_maps=[nhwc_grad(s3), nhwc_grad(s4)],
                          block_feats=pooled["sum"], mid_feats=pooled["mid"], gated_feats=pooled["gated"])

    def embed(self, x: Tensor) -> Tensor:
        """The retrieval embedding only (B, D), without the classifier or per-block features."""
        _, s4, _ = self.backbone(x, collect=False)
        with _float32(s4):
            return self.head.embed(_wide(s4).mean(dim=(2, 3)))

    def forward(self, x: Tensor) -> Union[Tensor, ReIDOutput]:
        if self.training:
            return self.forward_features(x)
        return self.embed(x)

    # ---------------------------------------------------------------- structure
    def named_blocks(self) -> Iterator[Tuple[str, Block]]:
        return self.backbone.named_blocks()

    def named_pcp_blocks(self) -> Iterator[Tuple[str, Block]]:
        """``(name, block)`` for every block that carries PCP pruners (name like ``"stage3.5"``)."""
        for name, block in self.backbone.named_blocks():
            if block.pcp is not None:
                yield name, block

    def pcp_blocks(self) -> Iterator[Block]:
        """Every block that carries PCP pruners, in network order."""
        for _, block in self.named_pcp_blocks():
            yield block

    def block_widths(self) -> List[Tuple[int, ...]]:
        """Current per-block ``widths`` (``(C1, C3)`` / ``(C,)``)."""
        return [tuple(b.widths) for _, b in self.backbone.named_blocks()]

    # ---------------------------------------------------------------- sparsity
    def group_lasso(self, eps: float = 1e-12, scale_invariant: bool = False) -> Tuple[Tensor, Tensor]:
        """``(lasso1, lasso2)`` over the PCP pruners: the sum of every input-side gate's group norms (DEAP
        pruner-1 columns) and of every output-side one (pruner-2 / CDD compactor / basic-block pruner rows);
        each norm is ``sqrt(sum w^2 + eps)`` in fp32 (:func:`~deap_lib.models.gates.group_norms`). ``eps``
        (ours, docs/decisions.rst §Decisions) keeps the gradient finite at an exactly zero group. Zeros without pruners.

        ``scale_invariant`` (ours, not the paper's): each pruner's sum of group norms is divided by the
        pruner's Frobenius norm, ``sum_c ||W[:, c]|| / ||W||_F``. Every pruner feeds a BatchNorm, so the
        network is invariant to a pruner's scale; the plain sum then mostly shrinks whole pruners (which
        inflates their effective learning rate), while the ratio is unchanged by scale and only rewards
        concentrating a pruner's weight on fewer groups."""
        ref = next(self.parameters())
        sums = [torch.zeros((), device=ref.device, dtype=torch.float32) for _ in range(2)]
        for block in self.pcp_blocks():
            for gate in block.gates():
                t = group_norms(gate.parts, eps).sum()
                if scale_invariant:
                    w = gate.parts[0][0].float()
                    t = t / (w.pow(2).sum() + eps).sqrt()
                sums[gate.side - 1] = sums[gate.side - 1] + t
        return sums[0], sums[1]

    @torch.no_grad()
    def pruner_norms(self) -> "OrderedDict[str, Tensor]":
        """Detached per-block norm vectors of the PCP pruners for logging: ``"stageL.i.pruner1"`` (column
        norms), ``"stageL.i.pruner2"`` / ``"stageL.i.compactor"`` (row norms); no eps."""
        out: "OrderedDict[str, Tensor]" = OrderedDict()
        for name, block in self.named_pcp_blocks():
            for gate in block.gates():
                out[f"{name}.{gate.name}"] = group_norms(gate.parts)
        return out

    # ---------------------------------------------------------------- parameter groups
    def classifier_parameters(self) -> Iterator[nn.Parameter]:
        """The training-only classifier (the final bias-free Linear), excluded from deploy-size counts."""
        return self.head.classifier.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """The whole head (ClassBlock incl. BN1d, FC and classifier): the paper's 1.5x-LR group."""
        return self.head.parameters()


def build_model(arch: str, num_classes: int, *, width: float = 1.0, last_stride: int = 1,
                pcp: Optional[str] = None, head: str = "classblock", embed_dim: int = 512,
                widths: Optional[Sequence[Sequence[int]]] = None, deploy: bool = False) -> ReIDNet:
    """Build a re-ID ResNet.

    ``arch``: one of ``MODELS`` (resnet18/34/50/101/152, mobilenet_v2). ``pcp``: None or a registered PCP kind
    ("deap", "cdd", :mod:`deap_lib.models.pcp_kinds`). ``head``:
    "classblock" (docs/methods/deap.rst §Head and embeddings) | "bnneck". ``widths``: per-block internal widths of a compact (pruned)
    model, ``(C1, C3)`` per bottleneck / ``(C,)`` per basic block / ``(hidden,)`` or ``()`` per inverted
    residual (``None`` = unpruned). ``deploy=True``
    (needs ``pcp=None``): the absorbed form, every BN folded into a biased conv (see :mod:`deap_lib.absorb`).
    """
    spec = MODELS.get(arch)
    _check_pcp(pcp, deploy)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    head_cls = HEADS.get(head)
    if isinstance(spec, ArchSpec):
        backbone = ResNetBackbone(spec, width=width, last_stride=last_stride, pcp=pcp, widths=widths,
                                  deploy=deploy)
    else:  # a backbone class (mobilenet_v2)
        backbone = spec(width=width, last_stride=last_stride, pcp=pcp, widths=widths, deploy=deploy)
    config = dict(arch=arch, num_classes=int(num_classes), width=float(width), last_stride=int(last_stride),
                  pcp=pcp, head=head, embed_dim=int(embed_dim),
                  widths=None if widths is None else [[int(v) for v in w] for w in widths],
                  deploy=bool(deploy))
    model = ReIDNet(backbone, head_cls(backbone.out_channels, num_classes, embed_dim), config)
    _init_backbone(model.backbone)
    return model


def _init_backbone(backbone: ResNetBackbone) -> None:
    """torchvision-style init: Kaiming-normal (fan_out, relu) convs, BN weight 1 / bias 0; pruners keep
    their identity init, deploy biases start at 0."""
    pruners = set()
    for _, block in backbone.named_blocks():
        pruners.update(id(p) for p in block.pruners())
    for m in backbone.modules():
        if isinstance(m, nn.Conv2d) and id(m) not in pruners:
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
