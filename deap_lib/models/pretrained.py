"""Load a torchvision ImageNet ResNet state dict (local file) into a :class:`ReIDNet` backbone.

The file is first loaded *strictly* into a freshly built torchvision ResNet of the same depth, then copied
module by module along the two networks' common structure (stem conv/BN, then per block conv1/bn1,
conv2/bn2, [conv3/bn3], downsample conv/BN). No state-dict key is rewritten. ``fc.*`` is ignored; PCP
pruners keep their identity initialisation, so a fresh PCP student equals the ImageNet network.
"""
from __future__ import annotations

import os
from typing import List, Mapping, Tuple

import torch
from torch import Tensor, nn

from .blocks import BasicBlock
from .resnet import ReIDNet


def _read_state_dict(path: str) -> Mapping[str, Tensor]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_pretrained: no such file: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle / zip errors: not a torch-saved tensor file
        raise ValueError(f"load_pretrained: {path} is not a readable torch state-dict file ({e})") from e
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        raise ValueError(f"load_pretrained: {path} does not hold a state dict (a mapping of parameter "
                         f"names to tensors, as saved by torch.save(resnet.state_dict())); got {type(obj).__name__}")
    return obj


def _torchvision_resnet(arch: str) -> nn.Module:
    """An uninitialised torchvision ResNet on the meta device (its weights come from the file)."""
    import torchvision

    if not hasattr(torchvision.models, arch):
        raise ValueError(f"load_pretrained: torchvision has no {arch}")
    with torch.device("meta"):
        return getattr(torchvision.models, arch)(weights=None)


def _module_pairs(tv: nn.Module, model: ReIDNet) -> List[Tuple[nn.Module, nn.Module]]:
    """(torchvision module, our module) pairs in structural order."""
    bb = model.backbone
    pairs = [(tv.conv1, bb.stem.conv), (tv.bn1, bb.stem.bn)]
    for s, ours in enumerate(bb.stages(), start=1):
        theirs = getattr(tv, f"layer{s}")
        if len(theirs) != len(ours):
            raise ValueError(f"load_pretrained: stage {s} has {len(ours)} blocks, torchvision layer{s} {len(theirs)}")
        for tb, ob in zip(theirs, ours):
            convs = [ob.conv1, ob.conv2] + ([] if isinstance(ob, BasicBlock) else [ob.conv3])
            for j, cb in enumerate(convs, start=1):
                pairs += [(getattr(tb, f"conv{j}"), cb.conv), (getattr(tb, f"bn{j}"), cb.bn)]
            if tb.downsample is not None:
                pairs += [(tb.downsample[0], ob.shortcut.conv), (tb.downsample[1], ob.shortcut.bn)]
            elif not isinstance(ob.shortcut, nn.Identity):
                raise ValueError("load_pretrained: block layouts differ (shortcut)")
    return pairs


def load_pretrained(model: ReIDNet, path: str) -> ReIDNet:
    """Copy a torchvision ResNet state dict from ``path`` into ``model``'s backbone (in place; returns it).

    Needs an unpruned, width-1.0, training-form model (``widths=None``, ``deploy=False``). The file must hold
    exactly the keys of ``torchvision.models.<arch>()`` (``fc.*`` optional and ignored) with matching shapes;
    otherwise a ``ValueError`` names the file and the missing / unexpected / mis-shaped keys.
    """
    cfg = model.config
    if cfg.get("deploy") or cfg.get("widths") is not None or cfg["width"] != 1.0:
        raise ValueError(f"load_pretrained needs an unpruned width-1.0 training-form model; got width="
                         f"{cfg['width']}, widths={'set' if cfg.get('widths') else None}, deploy={cfg.get('deploy')}")
    state = _read_state_dict(path)
    tv = _torchvision_resnet(cfg["arch"])
    expected = {k: v.shape for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    given = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = sorted(f"{k}: file {tuple(given[k].shape)} vs expected {tuple(expected[k])}"
                    for k in set(given) & set(expected) if given[k].shape != expected[k])
    if missing or unexpected or shapes:
        def _fmt(items: List[str]) -> str:
            return ", ".join(items[:12]) + (f", ... ({len(items)} in all)" if len(items) > 12 else "")
        parts = [f"load_pretrained: {path} does not match torchvision {cfg['arch']}"]
        if missing:
            parts.append(f"missing keys: {_fmt(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_fmt(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {_fmt(shapes)}")
        raise ValueError("; ".join(parts))
    tv.fc = nn.Identity()  # fc is not part of the backbone
    tv.load_state_dict(given, strict=True, assign=True)
    with torch.no_grad():
        for src, dst in _module_pairs(tv, model):
            dst.load_state_dict(src.state_dict(), strict=True)
    return model
