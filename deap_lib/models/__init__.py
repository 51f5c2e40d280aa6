"""Re-ID networks: ConvBN ResNets with optional PCP pruners (DEAP / CDD) and re-ID heads.

``build_model(arch, num_classes, *, width, last_stride, pcp, head, embed_dim, widths, deploy)`` -> ``ReIDNet``;
``load_pretrained(model, path)`` copies a local torchvision ResNet state dict into the backbone.
"""
from .blocks import BasicBlock, Bottleneck
from .convbn import ConvBN, StemMaxPool, make_pruner
from .heads import HEADS, BNNeck, ClassBlock
from .output import ReIDOutput
from .pcp_kinds import PCP_KINDS, PcpKind, register_pcp_kind
from .pretrained import load_pretrained
from .resnet import MODELS, ArchSpec, ReIDNet, ResNetBackbone, build_model, scale_channels

__all__ = ["PCP_KINDS", "PcpKind", "register_pcp_kind", "build_model", "load_pretrained", "MODELS", "HEADS", "ReIDNet", "ReIDOutput", "ResNetBackbone",
           "ArchSpec", "Bottleneck", "BasicBlock", "ConvBN", "StemMaxPool", "make_pruner", "ClassBlock", "BNNeck",
           "scale_channels"]
