"""SGD with the paper's parameter groups (docs/methods/deap.rst §Training recipe).

Every trainable parameter gets ``lr`` and weight decay ``weight_decay`` (BN, biases and pruners included);
the re-ID head (the whole ClassBlock: bottleneck FC, BN1d and the final classifier) gets ``lr * head_lr_mult``.
The released code selects the head by the substring "classifier" in parameter names; here the model says
which parameters form its head (no name matching).
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import nn

from .distributed import unwrap


def resolve_head_params(model: nn.Module) -> Optional[list[nn.Parameter]]:
    """The model's head parameters (the paper's 1.5x-LR group), asked from the model; ``None`` if it has none.

    Order of precedence: ``model.head_parameters()`` (ReIDNet: the whole ClassBlock), then
    ``model.head.parameters()``. ``classifier_parameters()`` is deliberately not used: in the models
    contract it is only the training-only final classifier (for complexity counts), a subset of the head.
    """
    model = unwrap(model)
    hook = getattr(model, "head_parameters", None)
    if callable(hook):
        return list(hook())
    head = getattr(model, "head", None)
    if isinstance(head, nn.Module):
        return list(head.parameters())
    return None


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    head_lr_mult: float = 1.5,
    head_params: Optional[Iterable[nn.Parameter]] = None,
    nesterov: bool = False,
) -> torch.optim.SGD:
    """SGD over the ``requires_grad`` parameters of ``model`` in two groups, ``base`` and ``head``.

    ``head_params``: explicit head parameters; default: asked from the model (:func:`resolve_head_params`).
    A model without a discoverable head (no ``head_parameters()``, no ``head`` sub-module) is an error
    unless ``head_lr_mult == 1``. Frozen parameters
    (e.g. a distillation teacher) are never added. Group names are in ``group["name"]``.
    """
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    model = unwrap(model)
    trainable: list[nn.Parameter] = []
    seen: set[int] = set()
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            trainable.append(p)
    if not trainable:
        raise ValueError(f"{type(model).__name__} has no parameter with requires_grad=True to optimise")

    head = list(head_params) if head_params is not None else resolve_head_params(model)
    if head is None:
        if head_lr_mult != 1.0:
            raise ValueError(
                f"{type(model).__name__} exposes no head (no head_parameters() method and no `head` "
                f"sub-module) but head_lr_mult={head_lr_mult}; pass head_params=... or head_lr_mult=1.0"
            )
        head = []
    all_ids = {id(p) for p in model.parameters()}
    foreign = [tuple(p.shape) for p in head if id(p) not in all_ids]
    if foreign:
        raise ValueError(f"head_params contains {len(foreign)} tensor(s) that are not parameters of the model: {foreign}")
    head_ids = {id(p) for p in head}

    base_group = [p for p in trainable if id(p) not in head_ids]
    head_group = [p for p in trainable if id(p) in head_ids]
    groups = []
    if base_group:
        groups.append({"name": "base", "params": base_group, "lr": lr})
    if head_group:
        groups.append({"name": "head", "params": head_group, "lr": lr * head_lr_mult})
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
