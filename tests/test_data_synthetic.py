"""Synthetic VeRi generator: layout, VeRi protocol, determinism, helpers."""
import csv
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from PIL import Image

from deap_lib.data import (SyntheticConfig, build_dataset, make_synthetic_veri, render_vehicle, sample_grid,
                           sample_identity)
from deap_lib.data.synthetic import encode_jpeg

TINY = dict(num_train_ids=6, num_test_ids=5, image_size=32, cameras_per_id=(2, 3), train_images_per_id=(3, 5),
            test_images_per_camera=(2, 3))
VERI_NAME = re.compile(r"^(\d{4})_c(\d{3})_(\d{8})_(\d+)\.jpg$")
FOLDERS = {"train": "image_train", "query": "image_query", "gallery": "image_test"}
LISTS = {"train": "name_train.txt", "query": "name_query.txt", "gallery": "name_test.txt"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "veri"
    info = make_synthetic_veri(root, seed=3, workers=1, **TINY)
    return root, info


def _files(root: Path):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _names(root: Path, split: str):
    return sorted(p.name for p in (root / FOLDERS[split]).iterdir())


def test_layout_and_name_lists(tiny):
    root, info = tiny
    for split in FOLDERS:
        names = _names(root, split)
        assert names, split
        listed = (root / LISTS[split]).read_text().splitlines()
        assert listed == names  # one name per line, sorted, same set as the folder
    counts = {s: len(_names(root, s)) for s in FOLDERS}
    assert (info.num_train_images, info.num_query_images, info.num_gallery_images) == (
        counts["train"], counts["query"], counts["gallery"])
    with open(root / "factors.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == sum(counts.values())
    assert {(r["split"], r["file"]) for r in rows} == {(s, n) for s in FOLDERS for n in _names(root, s)}
    img = Image.open(root / "image_train" / _names(root, "train")[0])
    assert img.format == "JPEG" and img.size == (32, 32) and img.mode == "RGB"


def test_file_names_and_veri_protocol(tiny):
    root, info = tiny
    parsed = defaultdict(list)
    for split in FOLDERS:
        for n in _names(root, split):
            m = VERI_NAME.match(n)
            assert m, n
            pid, cam = int(m.group(1)), int(m.group(2))
            assert 1 <= pid <= 776 and 1 <= cam <= 20
            parsed[split].append((pid, cam))
    train_ids = {p for p, _ in parsed["train"]}
    test_ids = {p for p, _ in parsed["query"] + parsed["gallery"]}
    assert len(train_ids) == TINY["num_train_ids"] and len(test_ids) == TINY["num_test_ids"]
    assert not train_ids & test_ids
    # exactly one query per (test id, camera) pair that the test set contains
    q = Counter(parsed["query"])
    assert all(v == 1 for v in q.values())
    assert set(q) == set(parsed["query"]) | set(parsed["gallery"])
    # every query has a same-id gallery image from another camera
    g = set(parsed["gallery"])
    for pid, cam in q:
        assert any(gp == pid and gc != cam for gp, gc in g), (pid, cam)
    # each identity is seen by several cameras
    cams = defaultdict(set)
    for pid, cam in parsed["train"] + parsed["query"] + parsed["gallery"]:
        cams[pid].add(cam)
    assert all(TINY["cameras_per_id"][0] <= len(c) <= TINY["cameras_per_id"][1] for c in cams.values())


def test_standard_veri_parser_reads_it(tiny):
    root, info = tiny
    ds = build_dataset("veri", root)
    assert ds.num_train_pids == TINY["num_train_ids"]
    assert len(ds.query) == info.num_query_images and len(ds.gallery) == info.num_gallery_images


def test_deterministic_across_calls_and_worker_counts(tiny, tmp_path):
    root, _ = tiny
    again = tmp_path / "again"
    make_synthetic_veri(again, seed=3, workers=2, **TINY)
    a, b = _files(root), _files(again)
    assert a.keys() == b.keys()
    diff = [k for k in a if a[k] != b[k]]
    assert not diff, diff[:5]
    other = tmp_path / "other"
    make_synthetic_veri(other, seed=4, workers=1, **TINY)
    assert _names(other, "train") != _names(root, "train")


def test_render_vehicle_reproduces_the_files(tiny):
    root, _ = tiny
    with open(root / "factors.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:3]
    cfg = SyntheticConfig(**TINY)
    for r in rows:
        img = render_vehicle(int(r["pid"]), int(r["cam"]), index=int(r["index"]), seed=3, config=cfg)
        data = (root / FOLDERS[r["split"]] / r["file"]).read_bytes()
        assert encode_jpeg(img, int(r["jpeg_quality"])) == data


def test_existing_root_is_reused_or_refused(tiny, tmp_path):
    root, info = tiny
    mtime = (root / "factors.csv").stat().st_mtime_ns
    again = make_synthetic_veri(root, seed=3, workers=1, **TINY)
    assert (root / "factors.csv").stat().st_mtime_ns == mtime
    assert again.num_gallery_images == info.num_gallery_images
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_synthetic_veri(root, seed=99, workers=1, **TINY)
    meta = json.loads((root / "meta.json").read_text())
    assert meta["seed"] == 3 and meta["config"]["image_size"] == 32
    assert not list(root.parent.glob(".veri.tmp-*"))  # no temporary folder left behind


def test_config_errors():
    with pytest.raises(ValueError, match="0001-0776"):
        SyntheticConfig(num_train_ids=500, num_test_ids=300)
    with pytest.raises(ValueError, match="test_images_per_camera"):
        SyntheticConfig(test_images_per_camera=(1, 3))
    with pytest.raises(TypeError, match="unknown SyntheticConfig field"):
        make_synthetic_veri("/nonexistent/never", num_train_idz=3)


def test_type_and_colour_are_shared_by_many_ids():
    cfg = SyntheticConfig()
    groups = Counter((i.vtype, i.colour) for i in (sample_identity(p, config=cfg) for p in range(1, 301)))
    singletons = sum(1 for v in groups.values() if v == 1)
    assert singletons / 300 < 0.1  # type + colour alone rarely identify a vehicle
    assert max(groups.values()) >= 8


def test_sample_grid(tiny):
    root, _ = tiny
    img = sample_grid(root, n_ids=3, split="train", max_cams=2)
    assert isinstance(img, Image.Image)
    assert img.size[0] == 2 * (32 + 3) and img.size[1] == 3 * (32 + 12 + 3)
    with pytest.raises(ValueError, match="split"):
        sample_grid(root, split="query")


def test_difficulty_dial():
    assert SyntheticConfig() == SyntheticConfig.at_difficulty(0.2)
    easy = SyntheticConfig.at_difficulty(0.0)
    assert (easy.clutter, easy.occlusion_prob, easy.colour_cast, easy.rotation_deg, easy.noise_max) == (0, 0, 0, 0, 0)
    assert easy.rear_view_prob == (0.0, 0.0) and easy.view_modes == (1.0, 0.0, 0.0)
    mid = SyntheticConfig.at_difficulty(0.5, num_train_ids=10)
    # halfway between the end points (hand computed): clutter (0 + 0.8) / 2, rotation (0 + 8) / 2
    assert (mid.clutter, mid.rotation_deg, mid.detail_scale, mid.num_train_ids) == (0.4, 4.0, 1.2, 10)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        SyntheticConfig.at_difficulty(1.5)


def test_homographies_against_hand_computed_affine_map():
    from deap_lib.data.synthetic.scene import _homographies
    import numpy as np
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=float)
    src = square * 2 + [10, 20]  # image points
    dst = square * 100  # texture points: u = 50 (x - 10), v = 50 (y - 20)
    h = _homographies(src[None], dst[None])[0]
    assert np.allclose(h, [50, 0, -500, 0, 50, -1000, 0, 0])
    degenerate = np.zeros((1, 4, 2))
    assert np.isnan(_homographies(degenerate, dst[None])).all()
