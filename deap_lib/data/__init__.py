"""Data layer: synthetic VeRi generator, dataset parsers + registry, P x K sampler, transforms, loaders and
the data of one run (:class:`RunData`)."""
from .datasets import (DATASETS, DatasetFormatError, DatasetNotFoundError, Item, ReIDDataset, build_dataset,
                       default_data_root, register_dataset)
from .vehicleid import vehicleid_splits  # registers "vehicleid"
from .loaders import ImageDataset, ImageReadError, build_test_loader, build_train_loader, read_image, seed_worker
from .run_data import RunData, transform_config
from .sampler import RandomIdentitySampler
from .synthetic import (SYNTHETIC, SyntheticConfig, SyntheticInfo, ensure_synthetic, make_synthetic_veri,
                        read_factors, render_identity, render_vehicle, sample_grid, sample_identity,
                        synthetic_config)
from .transforms import IMAGENET_MEAN, IMAGENET_STD, RandomErasing, TransformConfig, build_transforms

__all__ = [
    "DATASETS", "DatasetFormatError", "DatasetNotFoundError", "Item", "ReIDDataset", "build_dataset",
    "default_data_root", "register_dataset", "vehicleid_splits",
    "ImageDataset", "ImageReadError", "build_test_loader", "build_train_loader", "read_image", "seed_worker",
    "RunData", "transform_config", "RandomIdentitySampler",
    "SYNTHETIC", "ensure_synthetic", "synthetic_config", "SyntheticConfig", "SyntheticInfo", "make_synthetic_veri", "read_factors", "render_identity", "render_vehicle",
    "sample_grid", "sample_identity",
    "IMAGENET_MEAN", "IMAGENET_STD", "RandomErasing", "TransformConfig", "build_transforms",
]
