"""Post-training pruning and absorption (re-parameterisation) of PCP networks (METHODS 1.7, 1.8, 2.4).

The three evaluated forms of a trained student (METHODS 1.9):

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
from .models.blocks import BasicBlock, Bottleneck
from .models.convbn import ConvBN
from .models.resnet import ReIDNet

#: Default verification tolerance: max |f_pruned - f_absorbed| / max |f_pruned|, both evaluated in float64.
DEFAULT_TOL = 1e-6
#: Random batch used by ``absorb(check=True)``: 2 images of ``input_size``, seed 0.
CHECK_BATCH = 2


# ------------------------------------------------------------------------------------------ channel selection
def select_channels(norms: Tensor, threshold: float, min_channels: int = 1, relative: bool = False) -> Tensor:
    """Indices (ascending) of channels to keep: ``norm >= threshold`` (x max norm if ``relative``); at least
    ``min_channels`` (the largest norms, ties -> lower index) if fewer survive."""
    if min_channels < 1:
        raise ValueError(f"min_channels must be >= 1, got {min_channels}")
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    norms = norms.detach().double().flatten()
    thr = threshold * float(norms.max()) if relative else threshold
    keep = torch.nonzero(norms >= thr).flatten()
    if keep.numel() < min_channels:
        k = min(min_channels, norms.numel())
        keep = torch.argsort(norms, descending=True, stable=True)[:k]
    return torch.sort(keep).values


def _col_norms(w: Tensor) -> Tensor:
    return w.detach().double().pow(2).sum(dim=(0, 2, 3)).sqrt()


def _row_norms(w: Tensor) -> Tensor:
    return w.detach().double().pow(2).sum(dim=(1, 2, 3)).sqrt()


def _output_pruner(block: nn.Module) -> Optional[nn.Conv2d]:
    """The row-pruned (output-side) pruner of a block: DEAP pruner2 or CDD compactor."""
    return block.pruner2 if block.pruner2 is not None else block.compactor


def _block_keep(block: nn.Module, threshold: float, min_channels: int, relative: bool) -> List[Tensor]:
    """Kept index tensors, one per entry of ``block.widths``."""
    def sel(norms: Tensor) -> Tensor:
        return select_channels(norms, threshold, min_channels, relative)

    if block.pcp is None:
        return [torch.arange(w) for w in block.widths]
    post = _output_pruner(block)
    if isinstance(block, Bottleneck):
        keep1 = sel(_col_norms(block.pruner1.weight)) if block.pruner1 is not None \
            else torch.arange(block.widths[0])
        return [keep1, sel(_row_norms(post.weight))]
    if isinstance(block, BasicBlock):
        return [sel(_row_norms(post.weight))]
    raise TypeError(f"unsupported block type {type(block).__name__}")


# ------------------------------------------------------------------------------------------ copying helpers
def _rebuild(model: ReIDNet, **overrides: Any) -> ReIDNet:
    """A freshly built network with ``model``'s config (plus overrides) on its device and dtype."""
    ref = next(model.parameters())
    return build_model(**{**model.config, **overrides}).to(device=ref.device, dtype=ref.dtype)


@torch.no_grad()
def _copy_out(dst: ConvBN, src: ConvBN, idx: Tensor) -> None:
    """Copy a ConvBN keeping only output channels ``idx`` (conv rows, conv bias and BN entries)."""
    idx = idx.to(src.conv.weight.device)
    dst.conv.weight.copy_(src.conv.weight[idx])
    if src.conv.bias is not None:
        dst.conv.bias.copy_(src.conv.bias[idx])
    if isinstance(src.bn, nn.BatchNorm2d):
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(dst.bn, name).copy_(getattr(src.bn, name)[idx])
        dst.bn.num_batches_tracked.copy_(src.bn.num_batches_tracked)


@torch.no_grad()
def _copy_in(dst: ConvBN, src: ConvBN, idx: Tensor) -> None:
    """Copy a ConvBN keeping only input channels ``idx`` (conv columns); bias / BN copied whole."""
    dst.conv.weight.copy_(src.conv.weight[:, idx.to(src.conv.weight.device)])
    if src.conv.bias is not None:
        dst.conv.bias.copy_(src.conv.bias)
    dst.bn.load_state_dict(src.bn.state_dict())


@torch.no_grad()
def _copy_pruned_block(dst: nn.Module, src: nn.Module, keep: List[Tensor]) -> None:
    """Copy a PCP block into its narrower rebuild ``dst`` keeping the channels ``keep`` (see module doc)."""
    dev = src.conv1.conv.weight.device
    keep = [k.to(dev) for k in keep]
    dst.shortcut.load_state_dict(src.shortcut.state_dict())
    if isinstance(src, Bottleneck):
        k1, k3 = keep
        _copy_out(dst.conv1, src.conv1, k1)
        if src.pruner1 is not None:
            dst.pruner1.weight.copy_(src.pruner1.weight[:, k1])
        dst.conv2.load_state_dict(src.conv2.state_dict())  # CDD: k1 keeps every conv1 channel
        _output_pruner(dst).weight.copy_(_output_pruner(src).weight[k3])
        _copy_in(dst.conv3, src.conv3, k3)
    else:
        (k,) = keep
        dst.conv1.load_state_dict(src.conv1.state_dict())
        _output_pruner(dst).weight.copy_(_output_pruner(src).weight[k])
        _copy_in(dst.conv2, src.conv2, k)


# ------------------------------------------------------------------------------------------ prune
@dataclass
class BlockWidths:
    """Per-block widths: ``original`` -> ``kept`` (``(C1, C3)`` for bottlenecks, ``(C,)`` for basic blocks)."""

    name: str
    kind: str
    pcp: Optional[str]
    original: Tuple[int, ...]
    kept: Tuple[int, ...]


def _prune_with_plan(model: ReIDNet, threshold: float, min_channels: int, relative: bool
                     ) -> Tuple[ReIDNet, List[BlockWidths]]:
    plan: List[Tuple[str, nn.Module, List[Tensor]]] = []
    for name, block in model.named_blocks():
        plan.append((name, block, _block_keep(block, threshold, min_channels, relative)))
    widths = [[int(k.numel()) for k in keep] for _, _, keep in plan]
    pruned = _rebuild(model, widths=widths)
    with torch.no_grad():
        pruned.backbone.stem.load_state_dict(model.backbone.stem.state_dict())
        pruned.head.load_state_dict(model.head.state_dict())
        for (_, src, keep), (_, dst) in zip(plan, pruned.named_blocks()):
            _copy_pruned_block(dst, src, keep)
    pruned.train(model.training)
    rows = [BlockWidths(name, blk.kind, blk.pcp, tuple(blk.widths), tuple(w))
            for (name, blk, _), w in zip(plan, widths)]
    return pruned, rows


def _require_pcp(model: ReIDNet, what: str) -> None:
    if not isinstance(model, ReIDNet):
        raise TypeError(f"{what} expects a deap_lib.models.ReIDNet, got {type(model).__name__}")
    if model.config.get("pcp") is None:
        raise ValueError(f"{what}: the model has no PCP units (pcp=None); there is nothing to prune. "
                         f"Use to_deploy(model) for BN folding only.")


def prune(model: ReIDNet, threshold: float = 1e-3, min_channels: int = 1, relative: bool = False) -> ReIDNet:
    """The pruned-but-not-absorbed training-form model: PCP units and BN kept, channels whose pruner norm is
    below ``threshold`` removed (with their conv1 outputs / conv3 inputs). Rebuilt from per-block ``widths``
    (``model.config["widths"]``); same device, dtype and train/eval mode as ``model``."""
    _require_pcp(model, "prune")
    return _prune_with_plan(model, threshold, min_channels, relative)[0]


# ------------------------------------------------------------------------------------------ deploy
@torch.no_grad()
def fold_bn(cb: ConvBN) -> Tuple[Tensor, Tensor]:
    """``(W', b')`` in float64 of a ConvBN with its BatchNorm (eval statistics, its own eps) folded in.
    An already folded (deploy) ConvBN returns its weight and bias."""
    w = cb.conv.weight.double()
    b = cb.conv.bias.double() if cb.conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64,
                                                                           device=w.device)
    bn = cb.bn
    if isinstance(bn, nn.BatchNorm2d):
        if bn.running_mean is None:
            raise ValueError("fold_bn: BatchNorm2d without running statistics cannot be folded")
        scale = torch.rsqrt(bn.running_var.double() + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.double()
        shift = bn.bias.double() if bn.bias is not None else torch.zeros_like(scale)
        w = w * scale.reshape(-1, 1, 1, 1)
        b = shift + (b - bn.running_mean.double()) * scale
    elif not isinstance(bn, nn.Identity):
        raise TypeError(f"fold_bn: unsupported normalisation {type(bn).__name__}")
    return w, b


def _merge_in(k: Tensor, pruner: nn.Conv2d) -> Tensor:
    """Input-side merge ``K_a[o, c] = sum_m K[o, m] P[m, c]``."""
    return torch.einsum("omhw,mc->ochw", k, pruner.weight.double()[:, :, 0, 0])


def _merge_out(k: Tensor, b: Tensor, pruner: nn.Conv2d) -> Tuple[Tensor, Tensor]:
    """Output-side merge ``K[o', c] = sum_o P[o', o] K[o, c]``, ``b = P b`` (shape (C',))."""
    p = pruner.weight.double()[:, :, 0, 0]
    return torch.einsum("po,ochw->pchw", p, k), (p @ b).reshape(-1)


@torch.no_grad()
def _set(dst: ConvBN, w: Tensor, b: Tensor) -> None:
    if tuple(dst.conv.weight.shape) != tuple(w.shape) or dst.conv.bias is None:
        raise RuntimeError(f"absorb: deploy conv expects weight {tuple(dst.conv.weight.shape)}, got {tuple(w.shape)}")
    dst.conv.weight.copy_(w.to(dst.conv.weight.dtype))
    dst.conv.bias.copy_(b.reshape(-1).to(dst.conv.bias.dtype))


@torch.no_grad()
def _deploy_block(dst: nn.Module, src: nn.Module) -> None:
    if not isinstance(src.shortcut, nn.Identity):
        _set(dst.shortcut, *fold_bn(src.shortcut))
    post = _output_pruner(src)
    if isinstance(src, Bottleneck):
        _set(dst.conv1, *fold_bn(src.conv1))
        k, b = fold_bn(src.conv2)
        if src.pruner1 is not None:
            k = _merge_in(k, src.pruner1)
        if post is not None:
            k, b = _merge_out(k, b, post)
        _set(dst.conv2, k, b)
        _set(dst.conv3, *fold_bn(src.conv3))
    else:
        k, b = fold_bn(src.conv1)
        if post is not None:
            k, b = _merge_out(k, b, post)
        _set(dst.conv1, k, b)
        _set(dst.conv2, *fold_bn(src.conv2))


def _full_widths(model: ReIDNet) -> List[Tuple[int, ...]]:
    return [tuple([b.planes] * len(b.widths)) for _, b in model.named_blocks()]


def to_deploy(model: ReIDNet) -> ReIDNet:
    """Deploy form of ``model`` without pruning (BN folded, pruners merged; a teacher: BN folding only).
    Returns a new ``build_model(..., pcp=None, widths=..., deploy=True)`` network in eval mode."""
    if not isinstance(model, ReIDNet):
        raise TypeError(f"to_deploy expects a deap_lib.models.ReIDNet, got {type(model).__name__}")
    widths = [list(w) for w in model.block_widths()]
    if [tuple(w) for w in widths] == _full_widths(model):
        widths = None
    deploy = _rebuild(model, pcp=None, widths=widths, deploy=True)
    _set(deploy.backbone.stem, *fold_bn(model.backbone.stem))
    for (_, src), (_, dst) in zip(model.named_blocks(), deploy.named_blocks()):
        _deploy_block(dst, src)
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
           input_size: Sequence[int] = (3, 64, 64), profile: bool = True) -> Tuple[ReIDNet, AbsorbReport]:
    """Prune (PCP models) and absorb into a deploy model; returns ``(deploy_model, AbsorbReport)``.

    ``threshold=0`` keeps every channel (the unpruned deploy form). A ``pcp=None`` model is only BN-folded.
    ``check=True`` compares the deploy model with the pruned, not absorbed model (eval-mode embeddings) on a
    seeded random batch of ``CHECK_BATCH`` images of ``input_size`` and raises ``RuntimeError`` if the
    relative difference ``max|f_p - f_a| / max|f_p|`` (both models in float64) exceeds ``tol`` (default 1e-6;
    ``verify_tol`` is an alias). ``profile=True`` fills the report's complexity at ``input_size``.
    """
    if not isinstance(model, ReIDNet):
        raise TypeError(f"absorb expects a deap_lib.models.ReIDNet, got {type(model).__name__}")
    tol = tol if verify_tol is None else verify_tol
    input_size = tuple(int(v) for v in input_size)
    if model.config.get("pcp") is not None:
        pruned, rows = _prune_with_plan(model, threshold, min_channels, relative)
    else:
        pruned = model
        rows = [BlockWidths(n, b.kind, b.pcp, tuple(b.widths), tuple(b.widths)) for n, b in model.named_blocks()]
    deploy = to_deploy(pruned)
    report = AbsorbReport(threshold=threshold, min_channels=min_channels, relative=relative,
                          input_size=input_size, blocks=rows, tol=tol)
    if model.config.get("pcp") is None:
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
    """The paper's three evaluated forms of a PCP student (METHODS 1.9): ``unpruned_deploy`` (a),
    ``pruned`` (b, not absorbed) and ``absorbed`` (c = deploy form of b; compare with :func:`verify`)."""
    _require_pcp(model, "deploy_forms")
    pruned = prune(model, threshold, min_channels, relative)
    return {"unpruned_deploy": to_deploy(model), "pruned": pruned, "absorbed": to_deploy(pruned)}

