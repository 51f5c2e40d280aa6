"""Resolution as a way to save MACs (docs/methods/crkd.rst): paired high/low-resolution views and their evaluations.

A run trains at low resolution (LR) when its config sets ``data.hr_size`` (the teacher's high-resolution
input, H x W) apart from ``model.input_size`` (the student's LR input). Every training image is then
augmented once at HR and its LR view is that augmented HR tensor downsampled with antialiasing
(:class:`PairedViews`), so teacher and student see the same crop, flip and erasing; a training batch is
``(lr, pid, camid, index, hr)``. The test images are resized from the originals straight to the model's
input size. MACs are counted at the student's own input size. This pairing and the sizes are this
project's design (the source, IEEE TIP 2021, states only "HR teacher, LR student").

:func:`lr_size` turns a scale s into an LR size; :func:`evaluate_at` tests a model at any input size (the
HR-trained student "without adaptation"); :func:`evaluate_cross_resolution` ranks the HR teacher's gallery
features by the LR student's query features.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from .config import hr_size, is_paired, lr_size, scale_of  # noqa: F401  (re-exported: sizes and pairing)
from .data.transforms import PairedViews, downsample  # noqa: F401  (the LR view; re-exported here)

Size = Tuple[int, int]


def check_feature_maps(model: nn.Module, size: Sequence[int]) -> list:
    """The (H, W) of every stage map of ``model`` (a :class:`~deap_lib.models.ReIDNet`) at input ``size``;
    a ValueError naming the stage whose map is empty."""
    h, w = (int(v) for v in size)
    if min(h, w) < 1:
        raise ValueError(f"input size {h}x{w}: the stem's feature map is empty")
    ref = next(model.parameters())
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            maps = model.forward_features(torch.zeros(1, 3, h, w, dtype=ref.dtype, device=ref.device)).stage_maps
    except RuntimeError as e:  # a kernel larger than its input
        raise ValueError(f"input size {h}x{w} leaves an empty feature map: {e}") from e
    finally:
        model.train(was)
    shapes = [tuple(m.shape[-2:]) for m in maps]
    for k, s in enumerate(shapes):
        if min(s) < 1:
            raise ValueError(f"input size {h}x{w}: stage {k + 3} map is empty ({s[0]}x{s[1]})")
    return shapes


# ---------------------------------------------------------------------------------------------- evaluation
def test_loaders(cfg, size: Sequence[int]):
    """Query and gallery loaders of a run config's dataset with the test transform at ``size``."""
    from .data.datasets import build_dataset
    from .data.loaders import build_test_loader
    from .data.run_data import transform_config

    d = cfg.data
    if d.synthetic:
        from .data.synthetic import ensure_synthetic

        ensure_synthetic(d.root, d.synthetic)
    ds = build_dataset(d.dataset, d.root)
    kw = dict(transform_cfg=transform_config(cfg, size=tuple(int(v) for v in size)), batch_size=d.test_batch_size, num_workers=d.num_workers)
    return build_test_loader(ds.query, **kw), build_test_loader(ds.gallery, **kw)


def evaluate_at(model: nn.Module, cfg, size: Sequence[int], *, seed: int = 0,
                device: Optional[torch.device] = None) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``model`` tested at input ``size`` on ``cfg``'s dataset (symmetric: query and gallery both at
    ``size``); returns :func:`~deap_lib.inference.evaluate_model`'s (summary, per-query result)."""
    from .inference import evaluate_model

    check_feature_maps(model, size)
    q, g = test_loaders(cfg, size)
    return evaluate_model(model, q, g, device=device, seed=seed)


def evaluate_cross_resolution(student: nn.Module, teacher: nn.Module, cfg, *, seed: int = 0,
                              device: Optional[torch.device] = None) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Cross-resolution retrieval: the LR student's query features (at ``model.input_size``) against the HR
    teacher's gallery features (at ``data.hr_size``), both L2-normalised (cosine distance). The two
    embeddings must have the same size."""
    from .inference import evaluate_features, extract_features

    ds, dt = student.config.get("embed_dim"), teacher.config.get("embed_dim")
    if ds != dt:
        raise ValueError(f"cross-resolution retrieval needs one embedding space: the student's embedding has "
                         f"{ds} dimensions, the teacher's {dt}")
    q_lr, _ = test_loaders(cfg, cfg.model.input_size)
    _, g_hr = test_loaders(cfg, hr_size(cfg))
    qf, qp, qc = extract_features(student, q_lr, device)
    gf, gp, gc = extract_features(teacher, g_hr, device)
    return evaluate_features(qf, qp, qc, gf, gp, gc, seed=seed)


def lr_overrides(hr: Sequence[int], scale: float) -> Dict[str, Size]:
    """The config overrides of a run at scale s of the HR input ``hr``: ``model.input_size`` (the student's LR
    input, :func:`lr_size`) and ``data.hr_size`` (the teacher's)."""
    hr = tuple(int(v) for v in hr)
    return {"model.input_size": lr_size(hr, scale), "data.hr_size": hr}  # type: ignore[dict-item]


def deployed_model(metrics: Dict[str, Any]) -> nn.Module:
    """The deployed model of a finished run (``absorbed.pt`` of a pruning run, else ``model.pt``), from its
    study metrics (which carry ``run_dir``)."""
    from .rundir import RunDir

    return RunDir(metrics["run_dir"]).load_model("deployed")