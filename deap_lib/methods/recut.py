"""Another cut of a trained network: a run that differs from a finished one only in its final cut.

A pruning method with ``prune.schedule="end"`` (DEAP, CDD, np, kd_np_direct, kd_slim) trains the same way
whatever its budget: the cut keys (:data:`CUT_KEYS`: the MACs budget, its kind and allocation, width rounding,
BN re-calibration) act only once training is over, in the method's ``compress``. So the run "DEAP cut to 35 %
of the MACs" is the run "DEAP cut by its threshold" up to the end of its last epoch. :func:`seed_from_trained`
starts the new run folder from the finished run's final checkpoint (``last.pt``, its config rewritten to the
new one, and the pruner-norm log); the runner then resumes it after its last epoch, so only the cut, the
re-calibration and the evaluation run. The result is the one full training would give, tensor for tensor
(``tests/test_recut.py``), in seconds instead of a schedule.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from ..config import RunConfig, config_diff
from ..fileio import atomic_write_text
from ..engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..rundir import PRUNER_NORMS, RunDir
from .base import UserError
from .mixins import PruningMixin
from .registry import METHODS

#: the config keys a pruning method with ``prune.schedule="end"`` reads only in its final cut
CUT_KEYS = frozenset({"prune.target_macs", "prune.budget_kind", "prune.allocation", "prune.round_widths",
                      "prune.bn_recalib_batches"})
CHECKPOINT = "last.pt"
#: written beside the seeded checkpoint: which run this one was cut from, and that run's training time
MARKER = "cut_of.json"


def cut_only_difference(method: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The differing keys of two configs (``to_dict()`` form) of ``method`` when they train identically and differ
    only in the final cut (``{}``: the same config); ``None`` when one cannot be derived from the other (not a
    one-stage pruning method cutting at the end, or a training key differs)."""
    cls = METHODS.get(method)
    if not (isinstance(cls, type) and issubclass(cls, PruningMixin)):
        return None
    if a.get("method") != method or b.get("method") != method:
        return None
    if a.get("prune", {}).get("schedule") != "end" or b.get("prune", {}).get("schedule") != "end":
        return None
    diff = config_diff(a, b, added_defaults=RunConfig().to_dict())  # a key added since ``a`` was saved: its default
    return diff if set(diff) <= CUT_KEYS else None


def seed_from_trained(base: Path, cfg: RunConfig, out_dir: Path) -> None:
    """Start ``out_dir`` (which holds no checkpoint yet) from the finished run ``base`` of the same recipe but
    its cut: its final checkpoint with ``cfg`` as its config, and its pruner-norm log. Raises
    :class:`UserError` naming what does not match. The folder also gets :data:`MARKER`; the run's
    ``metrics.json`` then records ``cut_of`` (the base run), ``cut_wall_time_s`` (this cut) and ``wall_time_s``
    (the base's plus this cut's)."""
    base_dir = RunDir(base)
    if not base_dir.finished:
        raise UserError(f"--cut-of {base}: not a finished run (no {base_dir.metrics_path.name})")
    old = base_dir.metrics
    diff = cut_only_difference(cfg.method, old.get("config", {}), cfg.to_dict())
    if diff is None:
        changed = sorted(set(config_diff(old.get("config", {}), cfg.to_dict(),
                                         added_defaults=RunConfig().to_dict())) - CUT_KEYS)
        raise UserError(f"--cut-of {base}: its run trains differently from this one (method '{old.get('method')}'"
                        f"; differing keys besides the cut: {', '.join(changed)[:300] or 'none'}); only a one-stage "
                        f"pruning method with prune.schedule='end' can take another cut, differing only in "
                        f"{', '.join(sorted(CUT_KEYS))}")
    ckpt_path = base_dir.path / CHECKPOINT
    try:
        state = load_checkpoint(ckpt_path, map_location="cpu", weights_only=False)
    except (FileNotFoundError, CheckpointError) as e:
        raise UserError(f"--cut-of {base}: {e}") from None
    if int(state.get("epoch", -1)) != cfg.optim.epochs:
        raise UserError(f"--cut-of {base}: {ckpt_path.name} is at epoch {state.get('epoch')}, expected the last "
                        f"({cfg.optim.epochs})")
    state["config"] = cfg.to_dict()
    out_dir.mkdir(parents=True, exist_ok=True)
    if (base_dir.path / PRUNER_NORMS).is_file():
        shutil.copyfile(base_dir.path / PRUNER_NORMS, out_dir / PRUNER_NORMS)
    atomic_write_text(out_dir / MARKER, json.dumps({"run": old.get("run", base_dir.name),
                                                    "wall_time_s": old.get("wall_time_s")}) + "\n")
    save_checkpoint(out_dir / CHECKPOINT, state)  # last: a folder with it is a run to resume


def seeded_from(out_dir: Path) -> Optional[Dict[str, Any]]:
    """``{"run", "wall_time_s"}`` of the run ``out_dir`` was cut from (:func:`seed_from_trained`), else None."""
    p = Path(out_dir) / MARKER
    return json.loads(p.read_text()) if p.is_file() else None
