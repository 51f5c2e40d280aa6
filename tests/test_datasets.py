"""Dataset parsers on tiny fake trees (empty files: parsers never open images)."""
import os
from pathlib import Path

import pytest

from deap_lib.data import (DATASETS, DatasetFormatError, DatasetNotFoundError, ReIDDataset, build_dataset,
                           default_data_root, register_dataset, vehicleid_splits)


def touch(folder: Path, names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")


VERI = {
    "train": ["0010_c003_00000001_0.jpg", "0010_c005_00000002_0.jpg", "0002_c001_00000003_0.jpg",
              "0776_c020_00000004_1.jpg"],
    "query": ["0005_c002_00000010_0.jpg", "0007_c004_00000011_0.jpg"],
    "gallery": ["0005_c003_00000012_0.jpg", "0007_c004_00000013_0.jpg", "-1_c001_00000014_0.jpg"],
}


def make_veri(base: Path, release: bool = True) -> Path:
    names = {"train": "image_train", "query": "image_query", "gallery": "image_test"} if release else \
        {"train": "train", "query": "query", "gallery": "gallery"}
    for split, files in VERI.items():
        touch(base / names[split], files)
    (base / names["train"] / "Thumbs.db").write_bytes(b"")
    return base


def trip(items):
    return [(Path(p).name, pid, cam) for p, pid, cam in items]


@pytest.mark.parametrize("release", [True, False])
def test_veri_layouts(tmp_path, release):
    # parent folder name that a whole-path regex would match first (docs/decisions.rst §Pitfalls of the released code)
    make_veri(tmp_path / "x_12_c3" / "VeRi", release=release)
    ds = build_dataset("veri", tmp_path / "x_12_c3")
    assert isinstance(ds, ReIDDataset) and ds.name == "veri"
    # sorted by file name, pids relabelled in sorted pid order (2 -> 0, 10 -> 1, 776 -> 2), cams 0-based
    assert trip(ds.train) == [("0002_c001_00000003_0.jpg", 0, 0), ("0010_c003_00000001_0.jpg", 1, 2),
                              ("0010_c005_00000002_0.jpg", 1, 4), ("0776_c020_00000004_1.jpg", 2, 19)]
    assert trip(ds.query) == [("0005_c002_00000010_0.jpg", 5, 1), ("0007_c004_00000011_0.jpg", 7, 3)]
    # raw pids kept, pid -1 dropped
    assert trip(ds.gallery) == [("0005_c003_00000012_0.jpg", 5, 2), ("0007_c004_00000013_0.jpg", 7, 3)]
    assert ds.num_train_pids == 3 and ds.num_train_cams == 4
    assert ds.summary() == {"train": {"ids": 3, "images": 4, "cameras": 4},
                            "query": {"ids": 2, "images": 2, "cameras": 2},
                            "gallery": {"ids": 2, "images": 2, "cameras": 2}}
    assert "gallery" in ds.summary_table() and "veri" in repr(ds)


def test_veri_root_is_the_folder_itself(tmp_path):
    make_veri(tmp_path / "somewhere")
    assert len(build_dataset("veri", tmp_path / "somewhere").train) == 4


def test_missing_root_names_path_and_layout(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DatasetNotFoundError) as e:
        build_dataset("veri", missing)
    assert isinstance(e.value, FileNotFoundError)
    msg = str(e.value)
    assert str(missing) in msg and "does not exist" in msg and "image_train/" in msg and "image_test/" in msg


def test_missing_subfolder_is_named(tmp_path):
    base = make_veri(tmp_path / "veri")
    (base / "image_test").rename(base / "image_tst")
    with pytest.raises(DatasetNotFoundError) as e:
        build_dataset("veri", tmp_path)
    msg = str(e.value)
    assert str(base / "image_test") in msg and "missing" in msg and "Expected layout" in msg


def test_malformed_names_strict_and_lenient(tmp_path):
    base = make_veri(tmp_path / "veri")
    touch(base / "image_train", ["car_0001.jpg", "0003_x001_00000001_0.jpg", "0004_c031_00000001_0.jpg",
                                 "-_c001_00000001_0.jpg"])
    with pytest.raises(DatasetFormatError) as e:
        build_dataset("veri", tmp_path)
    msg = str(e.value)
    assert msg.startswith("4 file name(s)") and "car_0001.jpg" in msg and "camera 31 outside 1..20" in msg
    assert "strict=False" in msg
    with pytest.warns(UserWarning, match="4 file name"):
        ds = build_dataset("veri", tmp_path, strict=False)
    assert len(ds.train) == 4


def test_market1501_junk_and_distractors(tmp_path):
    base = tmp_path / "Market-1501-v15.09.15"
    touch(base / "bounding_box_train", ["0002_c1s1_000451_03.jpg", "0007_c6s1_000001_01.jpg"])
    touch(base / "query", ["0001_c1s1_001051_00.jpg"])
    touch(base / "bounding_box_test", ["-1_c1s1_000401_03.jpg", "0000_c3s1_000101_02.jpg", "0001_c2s1_000301_01.jpg"])
    ds = build_dataset("market1501", tmp_path)
    assert trip(ds.train) == [("0002_c1s1_000451_03.jpg", 0, 0), ("0007_c6s1_000001_01.jpg", 1, 5)]
    assert trip(ds.gallery) == [("0000_c3s1_000101_02.jpg", 0, 2), ("0001_c2s1_000301_01.jpg", 1, 1)]
    touch(base / "query", ["0001_c7s1_000001_00.jpg"])
    with pytest.raises(DatasetFormatError, match="camera 7 outside 1..6"):
        build_dataset("market1501", tmp_path)


def test_dukemtmc_renamed_layout(tmp_path):
    base = tmp_path / "dukemtmc"
    touch(base / "train", ["0005_c2_f0046985.jpg", "0005_c8_f0046999.jpg"])
    touch(base / "query", ["0010_c1_f0000001.jpg"])
    touch(base / "gallery", ["0010_c7_f0000002.jpg"])
    ds = build_dataset("dukemtmc", tmp_path)
    assert trip(ds.train) == [("0005_c2_f0046985.jpg", 0, 1), ("0005_c8_f0046999.jpg", 0, 7)]
    assert trip(ds.gallery) == [("0010_c7_f0000002.jpg", 10, 6)]


def test_msmt17_official_lists(tmp_path):
    base = tmp_path / "MSMT17_V1"
    train = {"0000/0000_000_01_0303morning_0015_0.jpg": 0, "0000/0000_001_05_0303morning_0020_0.jpg": 0,
             "0003/0003_000_15_0303noon_0001_1.jpg": 3}
    val = {"0001/0001_000_02_0303morning_0030_0.jpg": 1}
    query = {"0000/0000_000_07_0113morning_0001_0.jpg": 0}
    gallery = {"0000/0000_002_09_0113noon_0002_0.jpg": 0, "0002/0002_000_03_0113noon_0003_0.jpg": 2}
    for d, sub in ((train, "train"), (val, "train"), (query, "test"), (gallery, "test")):
        for rel in d:
            touch((base / sub / rel).parent, [Path(rel).name])
    for d, name in ((train, "list_train.txt"), (val, "list_val.txt"), (query, "list_query.txt"),
                    (gallery, "list_gallery.txt")):
        (base / name).write_text("".join(f"{k} {v}\n" for k, v in d.items()))
    ds = build_dataset("msmt17", tmp_path)
    # train = list_train + list_val, sorted by path; pids 0,1,3 -> 0,1,2; camera = 3rd field - 1
    assert trip(ds.train) == [("0000_000_01_0303morning_0015_0.jpg", 0, 0),
                              ("0000_001_05_0303morning_0020_0.jpg", 0, 4),
                              ("0001_000_02_0303morning_0030_0.jpg", 1, 1), ("0003_000_15_0303noon_0001_1.jpg", 2, 14)]
    assert trip(ds.query) == [("0000_000_07_0113morning_0001_0.jpg", 0, 6)]
    assert trip(ds.gallery) == [("0000_002_09_0113noon_0002_0.jpg", 0, 8), ("0002_000_03_0113noon_0003_0.jpg", 2, 2)]
    assert Path(ds.query[0].path).parent.parent.name == "test"
    assert len(build_dataset("msmt17", tmp_path, use_val=False).train) == 3
    # a listed file that is missing and a malformed line are reported
    with open(base / "list_query.txt", "a") as fh:
        fh.write("0009/0009_000_01_x_0001_0.jpg 9\nbroken-line\n")
    with pytest.raises(DatasetFormatError, match="1 malformed line"):
        build_dataset("msmt17", tmp_path)
    with pytest.warns(UserWarning):
        ds = build_dataset("msmt17", tmp_path, strict=False)
    assert len(ds.query) == 1


@pytest.mark.parametrize("test_dir", ["test", "gallery"])
def test_msmt17_flattened(tmp_path, test_dir):
    base = tmp_path / "MSMT17"
    touch(base / "train", ["0003_c01_0001.jpg", "0001_c15_0002.jpg"])
    touch(base / "query", ["0100_c05_0003.jpg"])
    touch(base / test_dir, ["0100_c06_0004.jpg"])
    ds = build_dataset("msmt17", tmp_path)
    assert trip(ds.train) == [("0001_c15_0002.jpg", 0, 14), ("0003_c01_0001.jpg", 1, 0)]
    assert trip(ds.gallery) == [("0100_c06_0004.jpg", 100, 5)]


def make_vehicleid(base: Path) -> Path:
    imgs = [f"{i:07d}" for i in range(1, 31)]
    touch(base / "image", [n + ".jpg" for n in imgs])
    split = base / "train_test_split"
    split.mkdir(parents=True)
    (split / "train_list.txt").write_text("".join(f"{imgs[i]} {100 + i % 4}\n" for i in range(8)))
    test = "".join(f"{imgs[8 + i]} {10 + i % 5}\n" for i in range(15))  # 5 ids x 3 images
    for size in (800, 1600, 2400):
        (split / f"test_list_{size}.txt").write_text(test if size == 800 else test + f"{imgs[29]} 99\n")
    return base


def test_vehicleid_standard_split(tmp_path):
    make_vehicleid(tmp_path / "VehicleID_V1.0")
    ds = build_dataset("vehicleid", tmp_path)
    assert ds.num_train_pids == 4 and {it.pid for it in ds.train} == {0, 1, 2, 3}
    assert [it.camid for it in ds.train] == [0] * 8
    # gallery: exactly one image per test id (camid 1); queries: the other two (camid 0)
    assert sorted(it.pid for it in ds.gallery) == [10, 11, 12, 13, 14]
    assert all(it.camid == 1 for it in ds.gallery) and all(it.camid == 0 for it in ds.query)
    assert sorted(it.pid for it in ds.query) == sorted([10, 11, 12, 13, 14] * 2)
    assert not {it.path for it in ds.query} & {it.path for it in ds.gallery}
    again = build_dataset("vehicleid", tmp_path, trial=0)
    assert again.gallery == ds.gallery
    splits = vehicleid_splits(tmp_path, 800, n_trials=10)
    assert len(splits) == 10 and splits[0].gallery == ds.gallery
    assert len({tuple(s.gallery) for s in splits}) > 1  # the trials differ
    big = build_dataset("vehicleid", tmp_path, test_size=1600)
    assert 99 in {it.pid for it in big.gallery} and big.meta["test_size"] == 1600
    with pytest.raises(ValueError, match="800, 1600, 2400"):
        build_dataset("vehicleid", tmp_path, test_size=500)


def test_vehicleid_missing_list_and_image(tmp_path):
    base = make_vehicleid(tmp_path / "VehicleID")
    (base / "train_test_split" / "test_list_2400.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="test_list_2400.txt"):
        build_dataset("vehicleid", tmp_path, test_size=2400)
    (base / "image" / "0000001.jpg").unlink()
    with pytest.raises(DatasetFormatError, match=r"1 image\(s\) listed .* missing.*0000001\.jpg"):
        build_dataset("vehicleid", tmp_path)


def test_vehicleid_prepared_layout(tmp_path):
    base = tmp_path / "vehicleid"
    touch(base / "train", ["0007_a.jpg", "0003_b.jpg"])
    touch(base / "query", ["0100_c.jpg"])
    touch(base / "gallery", ["0100_d.jpg"])
    ds = build_dataset("vehicleid", tmp_path)
    assert trip(ds.train) == [("0003_b.jpg", 0, 0), ("0007_a.jpg", 1, 0)]
    assert trip(ds.gallery) == [("0100_d.jpg", 100, 1)]


def test_registry_custom_dataset_and_default_root(tmp_path, monkeypatch):
    with pytest.raises(KeyError, match="valid names: .*market1501.*veri"):
        build_dataset("verii", tmp_path)
    assert {"veri", "vehicleid", "market1501", "dukemtmc", "msmt17"} <= set(DATASETS.names())

    @register_dataset("_toy_test_only", override=True)
    def toy(root, *, strict=True, n=2):
        return ReIDDataset("_toy_test_only", str(root), [(str(root / "a.jpg"), 0, 0)] * n, [], [])

    assert len(build_dataset("_toy_test_only", tmp_path, n=3).train) == 3
    monkeypatch.setenv("DEAP_DATA", str(tmp_path / "store"))
    assert default_data_root() == tmp_path / "store"
    make_veri(tmp_path / "store" / "veri")
    assert len(build_dataset("veri").train) == 4
    monkeypatch.delenv("DEAP_DATA")
    assert default_data_root().name == "data" and os.path.isabs(default_data_root())
