"""The batched data pipeline against the per-image reference (torchvision / PIL transforms per sample)."""
import numpy as np
import pytest
import torch
from PIL import Image

from deap_lib.data import TransformConfig, build_test_loader, build_train_loader
from deap_lib.data.batched import (BatchedImageDataset, ImageCache, augment_batch, build_batched_test_loader,
                                   build_batched_train_loader, draw_params)
from deap_lib.data.loaders import ImageReadError


@pytest.fixture
def noise_items(tmp_path):
    """Random-noise images of several sizes (every pixel differs, so a wrong crop or flip shows)."""
    rng, items = np.random.default_rng(0), []
    for p in range(6):
        for i in range(4):
            path = tmp_path / f"{p:04d}_c{i + 1:03d}_{i:08d}_0.png"
            Image.fromarray(rng.integers(0, 256, (30 + 3 * i, 26 + p, 3), dtype=np.uint8)).save(path)
            items.append((str(path), p, i))
    return items


CONFIGS = [
    TransformConfig(size=(24, 16), pad=3, erase_p=0.5),
    TransformConfig(size=(24, 16), pad=0, flip_p=0.0, erase_p=1.0, erase_fill="imagenet_mean_quirk"),
    TransformConfig(size=(20, 20), pad=2, flip_p=1.0, erase_p=0.0, interpolation="bicubic"),
]


@pytest.mark.parametrize("tcfg", CONFIGS)
@pytest.mark.parametrize("eager", [True, False])
def test_batched_training_batches_equal_the_per_image_pipeline_bit_for_bit(noise_items, tcfg, eager):
    kw = dict(batch_size=8, num_instances=2, transform_cfg=tcfg, seed=5)
    ref = build_train_loader(noise_items, **kw)
    cache = ImageCache([it[0] for it in noise_items], tcfg.size, tcfg.interpolation, eager=eager)
    new = build_batched_train_loader(noise_items, cache=cache, **kw)
    for epoch in (0, 3):
        ref.sampler.set_epoch(epoch)
        new.sampler.set_epoch(epoch)
        a, b = list(ref), list(new)
        assert len(a) == len(b) == len(ref) > 1
        for x, y in zip(a, b):
            assert x[0].dtype == y[0].dtype == torch.float32
            for t, u in zip(x, y):
                assert torch.equal(t, u)


def test_batched_batches_are_independent_of_workers_and_of_the_global_generator(noise_items):
    tcfg = CONFIGS[0]
    runs = []
    for workers in (0, 2):
        loader = build_batched_train_loader(noise_items, batch_size=8, num_instances=2, transform_cfg=tcfg, seed=1,
                                            num_workers=workers)
        loader.sampler.set_epoch(2)
        torch.manual_seed(workers)
        runs.append([b[0] for b in loader])
    assert all(torch.equal(x, y) for x, y in zip(*runs))


def test_paired_views_match_the_per_image_pipeline(noise_items):
    tcfg = TransformConfig(size=(32, 32), pad=2, erase_p=0.5)
    kw = dict(batch_size=8, num_instances=2, transform_cfg=tcfg, seed=3, lr_size=(16, 12))
    ref = next(iter(build_train_loader(noise_items, **kw)))
    new = next(iter(build_batched_train_loader(noise_items, **kw)))
    assert new[0].shape == (8, 3, 16, 12) and new[4].shape == (8, 3, 32, 32)
    assert torch.equal(new[4], ref[4]) and torch.equal(new[1], ref[1]) and torch.equal(new[3], ref[3])
    assert torch.allclose(new[0], ref[0], atol=1e-6)  # a batched resize vs one image at a time


def test_test_loader_equals_the_per_image_one(noise_items):
    tcfg = TransformConfig(size=(24, 16))
    a = list(build_test_loader(noise_items, transform_cfg=tcfg, batch_size=5))
    b = list(build_batched_test_loader(noise_items, transform_cfg=tcfg, batch_size=5))
    assert [len(x[0]) for x in b] == [5, 5, 5, 5, 4]
    for x, y in zip(a, b):
        assert all(torch.equal(t, u) for t, u in zip(x, y))


def test_augmentation_on_a_hand_made_batch():
    """Flip, crop offsets and the erased box placed where the parameters say, normalisation by hand."""
    from deap_lib.data.batched import SampleParams

    tcfg = TransformConfig(size=(4, 5), pad=1, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    img = torch.arange(60, dtype=torch.uint8).reshape(1, 3, 4, 5)
    x = augment_batch(img, [SampleParams(flip=True, top=0, left=2, erase=(1, 1, 2, 2))], tcfg)
    padded = torch.nn.functional.pad(img.flip(-1), (1, 1, 1, 1))
    want = (padded[:, :, 0:4, 2:7].float() / 255 - 0.5) / torch.tensor([0.25, 0.5, 1.0]).view(1, 3, 1, 1)
    want[0, :, 1:3, 1:3] = 0.0
    assert torch.equal(x, want)


def test_parameter_draws_follow_the_configured_distribution():
    """Over many seeds: flip and erase rates near their probabilities, crop offsets uniform on 0..2*pad,
    erased areas inside the configured range."""
    tcfg = TransformConfig(size=(64, 64), pad=5, flip_p=0.5, erase_p=0.5)
    params = [draw_params(tcfg, s) for s in range(4000)]
    flips = np.mean([p.flip for p in params])
    erased = [p.erase for p in params if p.erase is not None]
    assert abs(flips - 0.5) < 0.03 and abs(len(erased) / 4000 - 0.5) < 0.03
    tops = np.bincount([p.top for p in params], minlength=11)
    assert len(tops) == 11 and tops.min() > 4000 / 11 * 0.8
    areas = np.array([h * w / 64 ** 2 for _, _, h, w in erased])
    assert areas.min() > 0.01 and areas.max() < 0.45


def test_cache_and_sampler_errors_name_what_is_wrong(noise_items, tmp_path):
    tcfg = TransformConfig(size=(24, 16))
    small = ImageCache([it[0] for it in noise_items[:3]], (24, 16), eager=False)
    with pytest.raises(ValueError, match="cache holds 3 images"):
        BatchedImageDataset(noise_items, tcfg, train=False, cache=small)
    ds = BatchedImageDataset(noise_items, tcfg, train=True)
    with pytest.raises(ValueError, match="seed per sample"):
        ds.__getitems__([0, 1])
    bad = tmp_path / "0009_c001_00000001_0.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match=bad.name):
        ImageCache([str(bad)], (8, 8))
