"""Post-training pruning and absorption (re-parameterisation) of PCP networks (docs/methods/deap.rst §Pruning, 1.8, 2.4).

The three evaluated forms of a trained student (docs/methods/deap.rst §What is evaluated):

* ``to_deploy(model)``: the unpruned student (or a teacher) in deploy form - BN folded into every conv,
  pruners merged into the 3x3 conv; numerically the same network.
* ``prune(model, threshold, min_channels)``: pruned but not absorbed - PCP units and BN kept, sub-threshold
  channels removed; rebuilt from per-block ``widths``.
* ``absorb(model, threshold, min_channels)``: pruned + absorbed deploy model, equal to ``prune``'s up to
  float error (checked).

Channel coupling comes from the block structure only (never from state-dict key order or names):

* DEAP bottleneck: pruner-1 column c  <->  conv1 output channel c (conv + its BN entries);
  pruner-2 row o  <->  conv3 input channel o (conv3's BN is untouched: its channels are block outputs).
* CDD bottleneck: compactor row o  <->  conv3 input channel o.
* PCP basic block: pruner row o  <->  conv2 input channel o.

Threshold rule: a channel is removed when its pruner norm (L2 over the column / row, no eps) is
``< threshold`` (``relative=True``, our extension: ``< threshold * max norm of that pruner``). If fewer than
``min_channels`` would survive, the ``min_channels`` largest norms are kept (ties -> lower index), which for
``min_channels=1`` is the paper's "keep at least one channel" rule.

Absorption, with BN folded as ``W' = W * gamma / sqrt(var + eps)``, ``b' = beta - mu * gamma / sqrt(var + eps)``
(each BN's own eps) and ``K2, b2`` the folded 3x3 conv, ``P1`` (planes x C1'), ``P2`` (C3' x planes):
input side ``K_a[o, c] = sum_m K2[o, m] P1[m, c]`` (bias stays b2; exact because P1 has no bias, so zero padding
commutes), output side ``K[o', c] = sum_o P2[o', o] K_a[o, c]``, ``b = P2 b2`` (shape (C3',), never squeezed).
The products are formed in float64 and cast back to the model's dtype. The ClassBlock is kept as is.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .export import load_compact, save_compact  # noqa: F401  (re-exported; the interface spec lists them here)
from .models import build_model
from .models.convbn import ConvBN
from .models.gates import group_norms
from .models.resnet import ReIDNet
from .pruning import keep_mask, widths_for

#: Default verification tolerance: max |f_pruned - f_absorbed| / max |f_pruned|, both evaluated in float64.
DEFAULT_TOL = 1e-6
#: Random batch used by ``absorb(check=True)``: 2 images of ``input_size``, seed 0.
CHECK_BATCH = 2


# ------------------------------------------------------------------------------------------ channel selection
def select_channels(norms: Tensor, threshold: float, min_channels: int = 1, relative: bool = False) -> Tensor:
    """Indices (ascending) of channels to keep under :func:`deap_lib.pruning.keep_mask` (in float64)."""
    m = keep_mask(norms.detach().double().flatten(), threshold, relative=relative, min_channels=min_channels)
    return torch.nonzero(m).flatten()


def _block_keep(block: nn.Module, threshold: float, min_channels: int, relative: bool,
                masks: Optional[Sequence[Tensor]] = None) -> List[Tensor]:
    """Kept index tensors, one per entry of ``block.widths``: from ``masks`` (one per gate) when given, else
    the threshold rule on the norms of the block's PCP gates (a plain block keeps everything)."""
    keep = [torch.arange(w) for w in block.widths]
    gates = block.gates()
    if masks is None and block.pcp is None:
        return keep
    for i, gate in enumerate(gates):
        if masks is not None:
            m = masks[i].detach().cpu()
        else:
            m = keep_mask(group_norms(gate.parts, dtype=torch.float64).detach().cpu(), threshold, relative=relative,
                          min_channels=min_channels)
        keep[gate.index] = torch.nonzero(m).flatten()
    return keep


def _rebuild(model: ReIDNet, **overrides: Any) -> ReIDNet:
    """A freshly built network with ``model``'s config (plus overrides) on its device and dtype."""
    ref = next(model.parameters())
    return build_model(**{**model.config, **overrides}).to(device=ref.device, dtype=ref.dtype)


def _replace_blocks(dst: ReIDNet, blocks: Sequence[nn.Module]) -> None:
    i = 0
    for stage in dst.backbone.stages():
        for j in range(len(stage)):
            stage[j] = blocks[i]
            i += 1


# ------------------------------------------------------------------------------------------ prune
@dataclass
class BlockWidths:
    """Per-block widths: ``original`` -> ``kept`` (``(C1, C3)`` for bottlenecks, ``(C,)`` for basic blocks)."""

    name: str
    kind: str
    pcp: Optional[str]
    original: Tuple[int, ...]
    kept: Tuple[int, ...]


def _prune_with_plan(model: ReIDNet, threshold: float, min_channels: int, relative: bool,
                     masks: Optional[Sequence[Sequence[Tensor]]] = None) -> Tuple[ReIDNet, List[BlockWidths]]:
    named = list(model.named_blocks())
    if masks is not None:
        widths_for(model, masks)  # one entry per block, one mask per gate
    plan = [(name, block, _block_keep(block, threshold, min_channels, relative,
                                      None if masks is None else masks[i]))
            for i, (name, block) in enumerate(named)]
    widths = [[int(k.numel()) for k in keep] for _, _, keep in plan]
    pruned = _rebuild(model, widths=widths)
    with torch.no_grad():
        for (_, dst), (_, src) in zip(pruned.backbone.fixed_convs(), model.backbone.fixed_convs()):
            dst.load_state_dict(src.state_dict())
        pruned.head.load_state_dict(model.head.state_dict())
        _replace_blocks(pruned, [block.pruned(keep) for _, block, keep in plan])
    pruned.train(model.training)
    rows = [BlockWidths(name, blk.kind, blk.pcp, tuple(blk.widths), tuple(w))
            for (name, blk, _), w in zip(plan, widths)]
    return pruned, rows


def _check_model(model: Any, what: str) -> None:
    if not isinstance(model, ReIDNet):
        raise TypeError(f"{what} expects a deap_lib.models.ReIDNet, got {type(model).__name__}")
    if model.config.get("deploy"):
        raise ValueError(f"{what}: the model is already in deploy form (BN folded); cut the training form")


def prune(model: ReIDNet, threshold: float = 1e-3, min_channels: int = 1, relative: bool = False, *,
          masks: Optional[Sequence[Sequence[Tensor]]] = None) -> ReIDNet:
    """The pruned-but-not-absorbed training-form model: gates and BN kept, removed channels cut from every
    layer they couple (each block's :meth:`pruned`). ``masks`` (one bool vector per gate of every block,
    :mod:`deap_lib.pruning`) chooses the channels for any kind of block, plain BN-gated ones included;
    without masks a channel goes when its PCP gate norm is below ``threshold`` (plain blocks are kept).
    Rebuilt from per-block ``widths`` (``model.config["widths"]``); same device, dtype and mode."""
    _check_model(model, "prune")
    if masks is None and model.config.get("pcp") is None:
        raise ValueError("prune: the model has no PCP units (pcp=None), so a threshold selects nothing; pass "
                         "masks= (e.g. from deap_lib.pruning on its BN gates) or use to_deploy(model) for BN "
                         "folding only.")
    return _prune_with_plan(model, threshold, min_channels, relative, masks)[0]


# ------------------------------------------------------------------------------------------ deploy
def fold_bn(cb: ConvBN) -> Tuple[Tensor, Tensor]:
    """``(W', b')`` in float64 of a ConvBN with its BatchNorm folded in (:meth:`ConvBN.fold`)."""
    return cb.fold()


def _full_widths(model: ReIDNet) -> List[Tuple[int, ...]]:
    return [tuple([b.planes] * len(b.widths)) for _, b in model.named_blocks()]


def to_deploy(model: ReIDNet) -> ReIDNet:
    """Deploy form of ``model`` without pruning: every block's :meth:`fused` form (BN folded, pruners
    merged; a teacher: BN folding only). A new ``build_model(..., pcp=None, widths=..., deploy=True)``
    network in eval mode."""
    if not isinstance(model, ReIDNet):
        raise TypeError(f"to_deploy expects a deap_lib.models.ReIDNet, got {type(model).__name__}")
    widths = [list(w) for w in model.block_widths()]
    if [tuple(w) for w in widths] == _full_widths(model):
        widths = None
    deploy = _rebuild(model, pcp=None, widths=widths, deploy=True)
    for (_, dst), (_, src) in zip(deploy.backbone.fixed_convs(), model.backbone.fixed_convs()):
        dst.set_folded(*src.fold())
    _replace_blocks(deploy, [block.fused() for _, block in model.named_blocks()])
    deploy.head.load_state_dict(model.head.state_dict())
    return deploy.eval()


# ------------------------------------------------------------------------------------------ verify / absorb
@torch.no_grad()
def verify(reference: nn.Module, absorbed: nn.Module, inputs: Tensor) -> Dict[str, float]:
    """Compare eval-mode embeddings: ``max_abs = max |f_ref - f_abs|``, ``max_rel = max_abs / max |f_ref|``.
    Both models' train/eval modes are restored afterwards."""
    modes = (reference.training, absorbed.training)
    try:
        ref = reference.eval()(inputs)
        out = absorbed.eval()(inputs)
    finally:
        reference.train(modes[0])
        absorbed.train(modes[1])
    if ref.shape != out.shape:
        raise ValueError(f"verify: embedding shapes differ: reference {tuple(ref.shape)} vs {tuple(out.shape)}")
    max_abs = float((ref.double() - out.double()).abs().max())
    scale = float(ref.double().abs().max())
    return {"max_abs": max_abs, "max_rel": max_abs / max(scale, torch.finfo(torch.float64).tiny)}


@dataclass
class AbsorbReport:
    """What ``absorb`` did: per-block widths, complexity of the forms, and the verification result.

    ``complexity`` maps ``"train_form"`` (the input model), ``"unpruned_deploy"`` (paper form (a)) and
    ``"absorbed"`` (form (c)) to ``deap_lib.complexity.profile`` dicts (params, params_no_classifier, macs)
    at ``input_size``; empty (with a note) when profiling is off or unavailable.
    """

    threshold: float
    min_channels: int
    relative: bool
    input_size: Tuple[int, int, int]
    blocks: List[BlockWidths] = field(default_factory=list)
    complexity: Dict[str, Dict[str, float]] = field(default_factory=dict)
    verification: Optional[Dict[str, float]] = None
    tol: Optional[float] = None
    notes: List[str] = field(default_factory=list)

    def kept_fraction(self) -> float:
        """Kept / original prunable channels, summed over PCP blocks (1.0 without PCP blocks)."""
        orig = sum(sum(b.original) for b in self.blocks if b.pcp is not None)
        kept = sum(sum(b.kept) for b in self.blocks if b.pcp is not None)
        return kept / orig if orig else 1.0

    def widths(self) -> List[List[int]]:
        return [list(b.kept) for b in self.blocks]

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["kept_fraction"] = self.kept_fraction()
        return d

    def table(self) -> str:
        lines = [f"{'block':<11} {'kind':<10} {'original':>12} {'kept':>12}"]
        for b in self.blocks:
            lines.append(f"{b.name:<11} {b.kind:<10} {str(b.original):>12} {str(b.kept):>12}")
        lines.append(f"kept fraction of prunable channels: {self.kept_fraction():.3f}")
        for form, c in self.complexity.items():
            lines.append(f"{form:<16} params {c.get('params', float('nan')) / 1e6:8.3f} M  "
                         f"(no classifier {c.get('params_no_classifier', float('nan')) / 1e6:8.3f} M)  "
                         f"MACs {c.get('macs', float('nan')) / 1e9:8.4f} G")
        if self.verification is not None:
            lines.append(f"verification: max_abs {self.verification['max_abs']:.3e}  "
                         f"max_rel {self.verification['max_rel']:.3e}  (tol {self.tol:g})")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _profile_forms(forms: Dict[str, nn.Module], input_size: Tuple[int, int, int], report: AbsorbReport) -> None:
    try:
        from .complexity import profile  # lazy: owned by another module, optional here
    except ImportError as e:
        report.notes.append(f"complexity not profiled: deap_lib.complexity unavailable ({e})")
        return
    for name, m in forms.items():
        report.complexity[name] = {k: float(v) for k, v in profile(m, input_size).items()
                                   if isinstance(v, (int, float))}


def absorb(model: ReIDNet, threshold: float = 1e-3, min_channels: int = 1, *, relative: bool = False,
           check: bool = True, tol: float = DEFAULT_TOL, verify_tol: Optional[float] = None,
           input_size: Sequence[int] = (3, 64, 64), profile: bool = True,
           masks: Optional[Sequence[Sequence[Tensor]]] = None) -> Tuple[ReIDNet, AbsorbReport]:
    """Prune (PCP models) and absorb into a deploy model; returns ``(deploy_model, AbsorbReport)``.

    ``threshold=0`` keeps every channel (the unpruned deploy form). A ``pcp=None`` model is only BN-folded
    unless ``masks`` choose channels of its gates (as for :func:`prune`, any kind of block).
    ``check=True`` compares the deploy model with the pruned, not absorbed model (eval-mode embeddings) on a
    seeded random batch of ``CHECK_BATCH`` images of ``input_size`` and raises ``RuntimeError`` if the
    relative difference ``max|f_p - f_a| / max|f_p|`` (both models in float64) exceeds ``tol`` (default 1e-6;
    ``verify_tol`` is an alias). ``profile=True`` fills the report's complexity at ``input_size``.
    """
    if not isinstance(model, ReIDNet):
        raise TypeError(f"absorb expects a deap_lib.models.ReIDNet, got {type(model).__name__}")
    tol = tol if verify_tol is None else verify_tol
    input_size = tuple(int(v) for v in input_size)
    if model.config.get("deploy"):
        raise ValueError("absorb: the model is already in deploy form")
    if model.config.get("pcp") is not None or masks is not None:
        pruned, rows = _prune_with_plan(model, threshold, min_channels, relative, masks)
    else:
        pruned = model
        rows = [BlockWidths(n, b.kind, b.pcp, tuple(b.widths), tuple(b.widths)) for n, b in model.named_blocks()]
    deploy = to_deploy(pruned)
    report = AbsorbReport(threshold=threshold, min_channels=min_channels, relative=relative,
                          input_size=input_size, blocks=rows, tol=tol)
    if model.config.get("pcp") is None and masks is None:
        report.notes.append("pcp=None: BN folding only, no channel pruned")
    if check:
        # The identity is checked in float64 (pruned vs absorbed, both in double), so a channel whose BN
        # variance is ~0 (gamma / sqrt(var + eps) ~ 300) cannot turn fp32 rounding into a false alarm;
        # the fp32 difference of the returned models is reported beside it.
        ref = next(model.parameters())
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(CHECK_BATCH, *input_size, generator=gen, dtype=torch.float64).to(ref.device)
        p64 = copy.deepcopy(pruned).double()
        report.verification = verify(p64, to_deploy(p64), x)
        report.verification["fp32_max_rel"] = verify(pruned, deploy, x.to(ref.dtype))["max_rel"]
        if not report.verification["max_rel"] <= tol:
            raise RuntimeError(f"absorb: the absorbed model differs from the pruned model: max_rel "
                               f"{report.verification['max_rel']:.3e} > tol {tol:g} "
                               f"(max_abs {report.verification['max_abs']:.3e}, float64 check)")
    if profile:
        _profile_forms({"train_form": model, "unpruned_deploy": to_deploy(model), "absorbed": deploy},
                       input_size, report)
    return deploy, report


def deploy_forms(model: ReIDNet, threshold: float = 1e-3, min_channels: int = 1, relative: bool = False
                 ) -> Dict[str, ReIDNet]:
    """The paper's three evaluated forms of a PCP student (docs/methods/deap.rst §What is evaluated): ``unpruned_deploy`` (a),
    ``pruned`` (b, not absorbed) and ``absorbed`` (c = deploy form of b; compare with :func:`verify`)."""
    pruned = prune(model, threshold, min_channels, relative)
    return {"unpruned_deploy": to_deploy(model), "pruned": pruned, "absorbed": to_deploy(pruned)}

