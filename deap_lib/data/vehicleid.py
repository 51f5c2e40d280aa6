"""PKU VehicleID: its official lists (a random query / gallery split of each test list, per trial) or a prepared
train / query / gallery folder; registered as ``vehicleid`` in :data:`~deap_lib.data.datasets.DATASETS`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from .datasets import (IMAGE_EXTS, DatasetFormatError, DatasetNotFoundError, Item, ReIDDataset, _check_nonempty,
                       _read_list, _report, default_data_root, find_layout, parse_folder, register_dataset, relabel)

VEHICLEID_LAYOUT = """\
  <root>/                     (or <root>/VehicleID/, <root>/VehicleID_V1.0/, <root>/vehicleid/)
    image/  0000001.jpg ...
    train_test_split/
      train_list.txt  test_list_800.txt  test_list_1600.txt  test_list_2400.txt   lines "<image name> <vehicle id>"
    (or a prepared split: train/ query/ gallery/ with files VVVV_*.jpg)"""

VEHICLEID_TEST_SIZES = (800, 1600, 2400)


def _vehicleid_lists(root: Path, test_size: int, strict: bool):
    if test_size not in VEHICLEID_TEST_SIZES:
        raise ValueError(f"vehicleid: test_size must be one of {VEHICLEID_TEST_SIZES}, got {test_size}")
    name = "vehicleid"
    base, lay = find_layout(name, root, ("VehicleID", "VehicleID_V1.0", "vehicleid", "PKU-VehicleID"),
                            (("image", "train_test_split"), ("train", "query", "gallery")), VEHICLEID_LAYOUT)
    if lay != ("image", "train_test_split"):
        return base, lay, None, None
    split_dir = base / "train_test_split"
    needed = [split_dir / "train_list.txt", split_dir / f"test_list_{test_size}.txt"]
    for p in needed:
        if not p.is_file():
            raise DatasetNotFoundError(f"vehicleid: missing list file '{p}'.\nExpected layout:\n{VEHICLEID_LAYOUT}")
    with os.scandir(base / "image") as it:
        present = {e.name for e in it}

    def load(p: Path) -> List[Tuple[str, int]]:
        out, missing = [], []
        for img, vid in _read_list(p, strict=strict):
            fname = img if img.lower().endswith(IMAGE_EXTS) else img + ".jpg"
            if fname not in present:
                missing.append(f"'{base / 'image' / fname}'")
                continue
            out.append((str(base / "image" / fname), vid))
        _report(missing, f"image(s) listed in '{p}' are missing", strict)
        return out

    return base, lay, load(needed[0]), load(needed[1])


def _vehicleid_split(test: List[Tuple[str, int]], split_seed: int, trial: int) -> Tuple[List[Item], List[Item]]:
    """Gallery = one random image per test id, query = the rest (query camid 0, gallery camid 1)."""
    by_id: Dict[int, List[str]] = {}
    for path, vid in test:
        by_id.setdefault(vid, []).append(path)
    rng = np.random.default_rng(np.random.SeedSequence([int(split_seed), int(trial)]))
    query, gallery = [], []
    for vid in sorted(by_id):
        paths = sorted(by_id[vid])
        g = int(rng.integers(len(paths)))
        gallery.append(Item(paths[g], vid, 1))
        query.extend(Item(p, vid, 0) for i, p in enumerate(paths) if i != g)
    return query, gallery


@register_dataset("vehicleid", layout=VEHICLEID_LAYOUT)
def vehicleid(root: Path, *, strict: bool = True, test_size: int = 800, split_seed: int = 0,
              trial: int = 0) -> ReIDDataset:
    """VehicleID. Standard layout: the test list ``test_size`` is split per ``(split_seed, trial)`` into one
    gallery image per id and the rest as queries; repeat over ``trial`` 0..9 (see ``vehicleid_splits``)
    and report mean / std. Query camid 0, gallery camid 1, so evaluation removes nothing."""
    base, lay, train_l, test_l = _vehicleid_lists(root, test_size, strict)
    if train_l is None:  # prepared split folders
        tr = parse_folder(base / "train", r"(\d+)_", dataset="vehicleid", strict=strict, fixed_camid=0)
        q = parse_folder(base / "query", r"(\d+)_", dataset="vehicleid", strict=strict, fixed_camid=0)
        g = parse_folder(base / "gallery", r"(\d+)_", dataset="vehicleid", strict=strict, fixed_camid=1)
        for items, sub in ((tr, "train"), (q, "query"), (g, "gallery")):
            _check_nonempty(items, str(base / sub), "vehicleid")
        return ReIDDataset("vehicleid", str(base), relabel(tr), q, g, meta={"layout": "train/query/gallery"})
    train = relabel(sorted(Item(p, v, 0) for p, v in train_l))
    query, gallery = _vehicleid_split(test_l, split_seed, trial)
    for items, where in ((train, "train_list.txt"), (gallery, f"test_list_{test_size}.txt")):
        _check_nonempty(items, str(base / "train_test_split" / where), "vehicleid")
    return ReIDDataset("vehicleid", str(base), train, query, gallery,
                       meta={"layout": "official lists", "test_size": test_size, "split_seed": split_seed,
                             "trial": trial})


def vehicleid_splits(root=None, test_size: int = 800, n_trials: int = 10, *, split_seed: int = 0,
                     strict: bool = True) -> List[ReIDDataset]:
    """The ``n_trials`` seeded query/gallery draws of one VehicleID test size (lists parsed once)."""
    root = Path(root).expanduser() if root is not None else default_data_root()
    if not root.is_dir():
        raise DatasetNotFoundError(f"vehicleid: data root '{root}' does not exist.\nExpected layout:\n"
                                   f"{VEHICLEID_LAYOUT}")
    base, lay, train_l, test_l = _vehicleid_lists(root, test_size, strict)
    if train_l is None:
        raise DatasetFormatError(f"vehicleid: '{base}' holds a prepared train/query/gallery split; repeated "
                                 "random splits need the official image/ + train_test_split/ layout")
    train = relabel(sorted(Item(p, v, 0) for p, v in train_l))
    out = []
    for t in range(n_trials):
        q, g = _vehicleid_split(test_l, split_seed, t)
        out.append(ReIDDataset("vehicleid", str(base), train, q, g,
                               meta={"layout": "official lists", "test_size": test_size, "split_seed": split_seed,
                                     "trial": t}))
    return out
