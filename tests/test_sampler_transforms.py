"""P x K sampler, transforms and loaders."""
from collections import Counter

import pytest
import torch
from PIL import Image

from deap_lib.data import (IMAGENET_MEAN, IMAGENET_STD, ImageDataset, ImageReadError, RandomErasing,
                           RandomIdentitySampler, TransformConfig, build_test_loader, build_train_loader,
                           build_transforms)

# pid -> number of images; ids 2 and 5 have fewer than K = 4 images
COUNTS = {0: 8, 1: 5, 2: 2, 3: 4, 4: 12, 5: 1}


def items_from(counts):
    return [(f"img_{p}_{i}.jpg", p, i % 3) for p, n in counts.items() for i in range(n)]


def batches(sampler, size):
    idx = list(sampler)
    assert len(idx) % size == 0
    return [idx[i:i + size] for i in range(0, len(idx), size)]


def test_pk_batch_composition_and_replacement():
    items = items_from(COUNTS)
    s = RandomIdentitySampler(items, num_instances=4, batch_size=8, seed=1)
    seen = Counter()
    for b in batches(s, 8):
        pids = [items[i][1] for i in b]
        # P = 2 identities, K = 4 consecutive images each
        assert len(set(pids)) == 2 and all(len(set(pids[k:k + 4])) == 1 for k in (0, 4))
        for k in (0, 4):
            chunk = b[k:k + 4]
            pid = pids[k]
            assert all(items[i][1] == pid for i in chunk)
            if COUNTS[pid] < 4:  # resampled with replacement from its own few images
                assert set(chunk) <= {i for i, it in enumerate(items) if it[1] == pid}
            else:
                assert len(set(chunk)) == 4
        seen.update(b)
    # ids with >= K images never reuse an image within an epoch
    assert all(v == 1 for i, v in seen.items() if COUNTS[items[i][1]] >= 4)


def test_epoch_length_formula_and_len():
    items = items_from(COUNTS)
    s = RandomIdentitySampler(items, num_instances=4, batch_size=8, seed=0)
    # sum_p floor(max(n_p, K) / K) * K = 8 + 4 + 4 + 4 + 12 + 4 (hand computed)
    assert s.max_length() == 36
    for epoch in range(5):
        s.set_epoch(epoch)
        n = len(list(s))
        assert n == len(s) and n % 8 == 0 and n <= 36 and s.num_batches() == n // 8
    # equal chunk counts and P = number of ids: every id is drawn every batch -> exactly the bound
    even = items_from({p: 8 for p in range(4)})
    s2 = RandomIdentitySampler(even, num_instances=4, batch_size=16, seed=0)
    assert len(s2) == s2.max_length() == 32


def test_sampler_determinism_and_state():
    items = items_from(COUNTS)
    a = RandomIdentitySampler(items, 4, 8, seed=5)
    b = RandomIdentitySampler(items, 4, 8, seed=5)
    assert list(a) == list(b)
    a.set_epoch(1)
    e1 = list(a)
    assert e1 != list(b)
    c = RandomIdentitySampler(items, 4, 8, seed=0)
    c.load_state_dict(a.state_dict())
    assert list(c) == e1 and c.state_dict()["epoch"] == 1
    with pytest.raises(ValueError, match="num_instances"):
        RandomIdentitySampler(items, 2, 8).load_state_dict(a.state_dict())


def test_sampler_distributed_split_and_seeds():
    items = items_from({p: 8 for p in range(8)})
    full = RandomIdentitySampler(items, 4, 16, seed=3)
    ranks = [RandomIdentitySampler(items, 4, 16, seed=3, num_replicas=2, rank=r) for r in range(2)]
    f, r0, r1 = list(full), list(ranks[0]), list(ranks[1])
    assert len(r0) == len(r1) == len(f) // 2 == len(ranks[0])
    for k in range(len(f) // 16):  # each global batch = rank-0 half then rank-1 half, whole identities per rank
        assert f[16 * k:16 * k + 16] == r0[8 * k:8 * k + 8] + r1[8 * k:8 * k + 8]
        assert len({items[i][1] for i in r0[8 * k:8 * k + 8]}) == 2
    with pytest.raises(ValueError, match="num_replicas=3"):
        RandomIdentitySampler(items, 4, 16, num_replicas=3)
    seeded = list(RandomIdentitySampler(items, 4, 16, seed=3, with_seeds=True))
    assert [i for i, _ in seeded] == f and len({s for _, s in seeded}) == len(f)


def test_sampler_input_errors():
    with pytest.raises(ValueError, match="multiple of num_instances"):
        RandomIdentitySampler(items_from(COUNTS), 4, 10)
    with pytest.raises(ValueError, match="at least P=4 identities"):
        RandomIdentitySampler(items_from({0: 4, 1: 4}), 4, 16)


# ----------------------------------------------------------------------------------------------
# transforms

def test_train_and_test_shapes():
    cfg = TransformConfig(size=(32, 16), pad=2)
    img = Image.new("RGB", (50, 40), (10, 200, 30))
    torch.manual_seed(0)
    assert build_transforms(cfg, train=True)(img).shape == (3, 32, 16)
    assert build_transforms(cfg, train=False)(img).shape == (3, 32, 16)
    assert build_transforms({"size": [24, 24]}, train=False)(img).shape == (3, 24, 24)


def test_normalisation_of_constant_image():
    v = (51, 102, 204)
    out = build_transforms(TransformConfig(size=(8, 8)), train=False)(Image.new("RGB", (20, 12), v))
    for c in range(3):
        expect = (v[c] / 255.0 - [0.485, 0.456, 0.406][c]) / [0.229, 0.224, 0.225][c]
        assert torch.allclose(out[c], torch.full((8, 8), expect), atol=1e-5)


@pytest.mark.parametrize("fill,values", [("zero", (0.0, 0.0, 0.0)), ("imagenet_mean_quirk", (0.485, 0.456, 0.406))])
def test_random_erasing_fill(fill, values):
    cfg = TransformConfig(size=(40, 30), erase_p=1.0, erase_fill=fill, flip_p=0.0, pad=0)
    tf = build_transforms(cfg, train=True)
    assert isinstance(tf.transforms[-1], RandomErasing)
    img = Image.new("RGB", (30, 40), (255, 255, 255))  # normalised value (1 - m) / s, far from any fill
    torch.manual_seed(7)
    out = tf(img)
    white = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    erased = torch.isclose(out[0], torch.tensor(values[0])) & ~torch.isclose(out[0], torch.tensor(white[0]))
    frac = erased.float().mean().item()
    assert 0.01 <= frac <= 0.45
    ys, xs = torch.nonzero(erased, as_tuple=True)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    assert erased[box].all()  # one filled rectangle
    for c in range(3):
        assert torch.allclose(out[c][box], torch.tensor(values[c]))
        assert torch.allclose(out[c][~erased], torch.tensor(white[c]), atol=1e-5)
    torch.manual_seed(7)
    assert torch.equal(tf(img), out)  # deterministic given torch's RNG


def test_random_erasing_p0_and_config_errors():
    x = torch.ones(3, 10, 10)
    assert torch.equal(RandomErasing(p=0.0)(x), x)
    with pytest.raises(ValueError, match="erase_fill"):
        TransformConfig(erase_fill="mean")
    with pytest.raises(KeyError, match="unknown TransformConfig key"):
        build_transforms({"sizes": (8, 8)})


# ----------------------------------------------------------------------------------------------
# loaders

@pytest.fixture()
def jpg_items(tmp_path):
    items = []
    for p in range(4):
        for i in range(3):
            path = tmp_path / f"{p:04d}_c{i + 1:03d}_{i:08d}_0.jpg"
            Image.new("RGB", (20, 16), (40 * p, 60 * i, 90)).save(path, quality=95)
            items.append((str(path), p, i))
    return items


def test_image_dataset_and_test_loader(jpg_items):
    cfg = TransformConfig(size=(16, 8))
    ds = ImageDataset(jpg_items, build_transforms(cfg, train=False))
    img, pid, camid, idx = ds[5]
    assert img.shape == (3, 16, 8) and (pid, camid, idx) == (1, 2, 5)
    loader = build_test_loader(jpg_items, transform_cfg=cfg, batch_size=5)
    got = [b for b in loader]
    assert [len(b[0]) for b in got] == [5, 5, 2]
    assert torch.cat([b[3] for b in got]).tolist() == list(range(12))
    assert torch.cat([b[1] for b in got]).tolist() == [it[1] for it in jpg_items]


def test_corrupt_and_missing_images_name_the_file(tmp_path, jpg_items):
    bad = tmp_path / "0009_c001_00000001_0.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    ds = ImageDataset([(str(bad), 9, 0), (str(tmp_path / "gone.jpg"), 9, 0)])
    with pytest.raises(ImageReadError, match="0009_c001_00000001_0.jpg"):
        ds[0]
    with pytest.raises(ImageReadError, match="gone.jpg"):
        ds[1]
    truncated = tmp_path / "trunc.jpg"
    truncated.write_bytes(open(jpg_items[0][0], "rb").read()[:200])
    with pytest.raises(ImageReadError, match="trunc.jpg"):
        ImageDataset([(str(truncated), 0, 0)])[0]


def test_train_loader_pk_and_worker_independence(jpg_items):
    cfg = TransformConfig(size=(16, 8), pad=2)
    loaders = [build_train_loader(jpg_items, batch_size=4, num_instances=2, transform_cfg=cfg, num_workers=w, seed=3)
               for w in (0, 2)]
    runs = []
    for ld in loaders:
        ld.sampler.set_epoch(1)
        runs.append(list(ld))
    assert len(runs[0]) == len(loaders[0]) == 2  # 4 ids x floor(3/2) = 1 chunk each / 2 ids per batch
    for (x0, p0, c0, i0), (x1, p1, c1, i1) in zip(*runs):
        assert x0.shape == (4, 3, 16, 8)
        assert len(set(p0.tolist())) == 2 and torch.equal(i0, i1)
        assert torch.equal(x0, x1)  # same augmentations with 0 or 2 workers
    torch.manual_seed(123)  # the global RNG does not influence training batches
    loaders[0].sampler.set_epoch(1)
    assert torch.equal(next(iter(loaders[0]))[0], runs[0][0][0])
