"""The VeRi-776 protocol and writer (:func:`make_synthetic_veri`), the factors file, sample grids and the
embedded named sets (:data:`SYNTHETIC`)."""
from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import shutil
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw

from .config import GENERATOR_VERSION, NUM_VERI_IDS, SyntheticConfig, SyntheticInfo, _PLAN, _rng
from .identity import sample_identity
from .scene import encode_jpeg, render_image

# ----------------------------------------------------------------------------------------------
# protocol and writer

def _plan(seed: int, cfg: SyntheticConfig) -> List[Dict]:
    """Identities, their cameras, images per camera and (test) which image is the query."""
    r = _rng(seed, _PLAN)
    ids = r.choice(np.arange(1, NUM_VERI_IDS + 1), cfg.num_train_ids + cfg.num_test_ids, replace=False)
    train = sorted(int(v) for v in ids[: cfg.num_train_ids])
    test = sorted(int(v) for v in ids[cfg.num_train_ids:])
    plan = []
    for split, pids in (("train", train), ("test", test)):
        for pid in pids:
            nc = int(r.integers(cfg.cameras_per_id[0], cfg.cameras_per_id[1] + 1))
            cams = sorted(int(c) + 1 for c in r.choice(cfg.num_cameras, nc, replace=False))
            if split == "train":
                n = int(r.integers(cfg.train_images_per_id[0], cfg.train_images_per_id[1] + 1))
                counts = (1 + r.multinomial(n - nc, np.full(nc, 1.0 / nc))).tolist()
                tracks = [(c, int(k), -1) for c, k in zip(cams, counts)]
            else:
                tracks = []
                for c in cams:
                    k = int(r.integers(cfg.test_images_per_camera[0], cfg.test_images_per_camera[1] + 1))
                    tracks.append((c, k, int(r.integers(k))))
            plan.append(dict(pid=pid, split=split, tracks=tracks))
    return plan


FACTOR_COLUMNS = ["file", "split", "pid", "cam", "camid", "index", "frame", "type", "colour", "roof", "stripe",
                  "n_stickers", "n_windshield_stickers", "plate", "rims", "bumper", "n_wear", "yaw", "elevation", "view", "rear",
                  "mirror", "rotation", "fill", "shift_x", "shift_y", "brightness", "contrast", "cast_r", "cast_g",
                  "cast_b", "blur", "noise", "jpeg_quality", "occluder", "n_passing"]


def _view_name(yaw: float) -> str:
    a = abs(yaw)
    return "front" if a < 30 else "front-side" if a < 65 else "side" if a < 115 else "rear-side" if a < 150 else "rear"


def _render_identity_job(job: Tuple) -> List[Dict]:
    seed, cfg_dict, entry, out_dir = job
    cfg = SyntheticConfig(**cfg_dict)
    ident = sample_identity(entry["pid"], seed=seed, config=cfg)
    rows = []
    for cam, n, q in entry["tracks"]:
        for k in range(n):
            img, p = render_image(ident, cam, k, seed=seed, config=cfg)
            name = f"{ident.pid:04d}_c{cam:03d}_{p.frame:08d}_0.jpg"
            split = entry["split"] if entry["split"] == "train" else ("query" if k == q else "gallery")
            folder = {"train": "image_train", "query": "image_query", "gallery": "image_test"}[split]
            with open(os.path.join(out_dir, folder, name), "wb") as fh:
                fh.write(encode_jpeg(img, p.jpeg_quality))
            row = dict(file=name, split=split, pid=ident.pid, cam=cam, camid=cam - 1, index=k, **ident.summary())
            pd_ = asdict(p)
            pd_["view"] = _view_name(p.yaw)
            for c in FACTOR_COLUMNS:
                if c in pd_:
                    v = pd_[c]
                    row[c] = round(v, 4) if isinstance(v, float) else int(v) if isinstance(v, bool) else v
            rows.append(row)
    return rows


def make_synthetic_veri(root, *, seed: int = 0, config: Optional[SyntheticConfig] = None, workers: int = 2,
                        overwrite: bool = False, **overrides) -> SyntheticInfo:
    """Write the synthetic VeRi-776-layout dataset to ``root`` and return its ``SyntheticInfo``.

    ``overrides`` are ``SyntheticConfig`` fields (e.g. ``num_train_ids=6, image_size=32``). The set is
    built in a temporary sibling folder and moved into place at the end. If ``root`` already holds a
    complete set made with the same seed, config and generator version it is reused; a different one
    raises ``FileExistsError`` unless ``overwrite=True``. ``workers`` (processes) does not change the
    output.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    cfg = config or SyntheticConfig()
    if overrides:
        valid = {f.name for f in fields(SyntheticConfig)}
        bad = sorted(set(overrides) - valid)
        if bad:
            raise TypeError(f"unknown SyntheticConfig field(s) {bad}; valid: {sorted(valid)}")
        cfg = SyntheticConfig(**{**asdict(cfg), **overrides})
    root = Path(root)
    meta_wanted = dict(generator_version=GENERATOR_VERSION, seed=int(seed), config=asdict(cfg))
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a folder")
    if root.exists() and any(root.iterdir()):
        meta_path = root / "meta.json"
        if meta_path.is_file() and not overwrite:
            meta = json.loads(meta_path.read_text())
            if all(json.dumps(meta.get(k), sort_keys=True) == json.dumps(v, sort_keys=True)
                   for k, v in json.loads(json.dumps(meta_wanted)).items()):
                return SyntheticInfo(**{**meta["info"], "root": str(root),
                                        "factors_csv": str(root / "factors.csv")})
        if not overwrite:
            raise FileExistsError(f"{root} already exists and does not hold this synthetic set (seed {seed}, same "
                                  "config); pass overwrite=True to replace it or choose another root")
    t0 = time.perf_counter()
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    for sub in ("image_train", "image_query", "image_test"):
        (tmp / sub).mkdir(parents=True)
    plan = _plan(int(seed), cfg)
    jobs = [(int(seed), asdict(cfg), e, str(tmp)) for e in plan]
    try:
        if workers and workers > 1:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ctx.Pool(workers) as pool:
                results = pool.map(_render_identity_job, jobs, chunksize=4)
        else:
            results = [_render_identity_job(j) for j in jobs]
        rows = [row for rs in results for row in rs]
        order = {"train": 0, "query": 1, "gallery": 2}
        rows.sort(key=lambda rw: (order[rw["split"]], rw["file"]))
        for split, fname in (("train", "name_train.txt"), ("query", "name_query.txt"), ("gallery", "name_test.txt")):
            names = sorted(rw["file"] for rw in rows if rw["split"] == split)
            (tmp / fname).write_text("".join(n + "\n" for n in names))
        with open(tmp / "factors.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=FACTOR_COLUMNS)
            w.writeheader()
            w.writerows(rows)
        count = {s: sum(rw["split"] == s for rw in rows) for s in order}
        info = SyntheticInfo(
            root=str(root), seed=int(seed), num_train_ids=cfg.num_train_ids, num_test_ids=cfg.num_test_ids,
            num_train_images=count["train"], num_query_images=count["query"], num_gallery_images=count["gallery"],
            num_cameras=len({rw["cam"] for rw in rows}), image_size=cfg.image_size,
            factors_csv=str(root / "factors.csv"), seconds=round(time.perf_counter() - t0, 2), config=asdict(cfg))
        # no timing or absolute paths in the files: same seed and config -> identical bytes
        stored = {**asdict(info), "seconds": 0.0, "root": ".", "factors_csv": "factors.csv"}
        (tmp / "meta.json").write_text(json.dumps({**meta_wanted, "info": stored}, indent=1, sort_keys=True) + "\n")
        if root.exists():
            old = root.parent / f".{root.name}.old-{os.getpid()}"
            os.replace(root, old)
            os.replace(tmp, root)
            shutil.rmtree(old)
        else:
            os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return info


def read_factors(root) -> List[Dict[str, str]]:
    """Rows of ``root/factors.csv`` (strings)."""
    path = Path(root) / "factors.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a synthetic VeRi folder made by make_synthetic_veri")
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def sample_grid(root, n_ids: int = 6, *, split: str = "test", max_cams: int = 6, seed: int = 0,
                label: bool = True) -> Image.Image:
    """A grid image: one row per random identity of ``split`` ('train' or 'test'), one image per camera."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    rows = read_factors(root)
    want = {"train"} if split == "train" else {"query", "gallery"}
    by_id: Dict[int, Dict[int, Dict]] = {}
    for rw in rows:
        if rw["split"] in want:
            by_id.setdefault(int(rw["pid"]), {}).setdefault(int(rw["cam"]), rw)
    pids = sorted(by_id)
    r = np.random.default_rng(seed)
    chosen = sorted(int(v) for v in r.choice(pids, min(n_ids, len(pids)), replace=False))
    folder = {"train": "image_train", "query": "image_query", "gallery": "image_test"}
    tiles = []
    for pid in chosen:
        cams = sorted(by_id[pid])[:max_cams]
        tiles.append([(by_id[pid][c], Image.open(Path(root) / folder[by_id[pid][c]["split"]] / by_id[pid][c]["file"])
                       .convert("RGB")) for c in cams])
    s = max(t[1].size[0] for row in tiles for t in row)
    lab = 12 if label else 0
    gap = 3
    out = Image.new("RGB", (max_cams * (s + gap), len(tiles) * (s + lab + gap)), (255, 255, 255))
    d = ImageDraw.Draw(out)
    for i, row in enumerate(tiles):
        for j, (rw, im) in enumerate(row):
            x, y = j * (s + gap), i * (s + lab + gap)
            out.paste(im.resize((s, s)), (x, y + lab))
            if label:
                d.text((x + 1, y), f"{rw['pid']} c{int(rw['cam']):02d} {rw['type'][:5]}/{rw['colour'][:5]}",
                       fill=(0, 0, 0))
    return out


# ---------------------------------------------------------------------------------------------- named sets
#: Generator settings of the embedded synthetic datasets (``DataConfig.synthetic`` names one).
#: ``difficulty`` picks ``SyntheticConfig.at_difficulty(level)``; the other keys are SyntheticConfig fields.
SYNTHETIC: Dict[str, Dict] = {
    "default": {},  # SyntheticConfig's documented default (level 0.2): 180 train ids, 300 test ids, 128 px
    "easy": {"difficulty": 0.05},  # the cpu preset's (64 px input): same ids and images, milder nuisances
    # the pre-training stand-in for ImageNet (cpu preset): its own generator stream (seed 1: other identities,
    # other camera styles), more identities and harsher nuisances than the benchmark (a domain shift)
    "pretrain": {"difficulty": 0.15, "seed": 1, "num_train_ids": 400, "num_test_ids": 60},
    "tiny_pretrain": dict(num_train_ids=10, num_test_ids=6, train_images_per_id=(4, 6), cameras_per_id=(2, 3),
                          test_images_per_camera=(2, 2), image_size=32, supersample=1, seed=1),
    "tiny": dict(num_train_ids=8, num_test_ids=6, train_images_per_id=(4, 6), cameras_per_id=(2, 3),
                 test_images_per_camera=(2, 2), image_size=32, supersample=1),
    # validation sets (data.val_root): the same generator and difficulty as the benchmark, its own stream (seed
    # 2: other identities), read for its query / gallery only (a token training split)
    "easy_val": {"difficulty": 0.05, "seed": 2, "num_train_ids": 2, "num_test_ids": 100},
    "tiny_val": dict(num_train_ids=1, num_test_ids=6, train_images_per_id=(4, 6), cameras_per_id=(2, 3),
                     test_images_per_camera=(2, 2), image_size=32, supersample=1, seed=2),
}


def synthetic_config(name: str):
    """The :class:`~deap_lib.data.SyntheticConfig` of the embedded synthetic dataset ``name``."""
    if name not in SYNTHETIC:
        raise KeyError(f"unknown synthetic dataset '{name}'; valid names: {', '.join(sorted(SYNTHETIC))}")
    kw = dict(SYNTHETIC[name])
    kw.pop("seed", None)
    level = kw.pop("difficulty", None)
    return SyntheticConfig(**kw) if level is None else SyntheticConfig.at_difficulty(level, **kw)


def synthetic_seed(name: str) -> int:
    """The generator seed of the named set (its own stream: 0 unless the entry says ``seed``)."""
    synthetic_config(name)  # validates the name
    return int(SYNTHETIC[name].get("seed", 0))


def ensure_synthetic(root: str, name: str, seed: Optional[int] = None):
    """Generate synthetic dataset ``name`` at ``root`` (with its own generator seed unless ``seed`` is given);
    a complete set made with the same settings is reused (``make_synthetic_veri`` checks seed, config and
    generator version and refuses to overwrite another)."""
    return make_synthetic_veri(root, seed=synthetic_seed(name) if seed is None else seed,
                               config=synthetic_config(name))
