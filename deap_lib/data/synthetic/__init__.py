"""Synthetic vehicle re-ID data in the VeRi-776 release layout (a package, one module per job: ``config``
settings, ``identity`` identities and body geometry, ``painting`` face textures, ``model`` the pseudo-3-D
vehicle, ``scene`` cameras and rendering, ``writer`` the protocol, files and the named sets).

``make_synthetic_veri(root)`` renders small pseudo-3-D vehicles (extruded side profiles with
textured faces, flat-shaded under a per-camera sun) seen by 20 fixed cameras, and writes::

    root/image_train/  image_query/  image_test/      VVVV_cCCC_FFFFFFFF_0.jpg
    root/name_train.txt  name_query.txt  name_test.txt  (sorted file names, one per line)
    root/factors.csv   (one row per image: split, pid, camera, identity and camera factors)
    root/meta.json     (config, seed, counts, generator version)

so any VeRi-776 parser reads it unchanged.

Identity factors (shared by many vehicles): type / body shape and a body colour from a small palette.
Identity-specific fine details, painted on the 3-D faces so they move consistently with the viewpoint:
licence plate pattern (front and rear), windshield inspection stickers, body stickers, stripes,
roof items, wheel rims, bumper / headlight / grille style, window tint, wear marks, two-tone roofs,
truck cargo liveries and bus liveries.

Camera factors: each camera has a characteristic style (mean viewpoint, elevation, sun, colour cast,
brightness, blur, noise, JPEG quality, background scene) and every image adds jitter (viewpoint,
driving direction = mirror, scale / crop, in-plane rotation, clutter, occluders).

Protocol (VeRi-like): disjoint train / test identities; every identity is seen by several cameras;
``image_query`` holds exactly one image per (test identity, camera) and ``image_test`` (the gallery)
holds the other test images, at least one per (test identity, camera), so every query has a
same-identity gallery image from another camera.

Determinism: every random draw comes from a ``numpy.random.SeedSequence`` keyed by
``(seed, tag, pid, camera, index)``, JPEGs are encoded with a fixed quality and no optimiser, so the
same seed and config give byte-identical files whatever the number of worker processes.
"""
from .config import DEFAULT_DIFFICULTY, GENERATOR_VERSION, NUM_VERI_IDS, VEHICLE_TYPES, SyntheticConfig, SyntheticInfo
from .identity import VehicleIdentity, sample_identity
from .model import build_vehicle_model
from .camera import camera_style
from .scene import (encode_jpeg, image_params, render_identity, render_image,
                    render_vehicle)
from .writer import (FACTOR_COLUMNS, SYNTHETIC, ensure_synthetic, make_synthetic_veri, read_factors, sample_grid,
                     synthetic_config, synthetic_seed)

__all__ = ["DEFAULT_DIFFICULTY", "GENERATOR_VERSION", "NUM_VERI_IDS", "VEHICLE_TYPES", "SyntheticConfig",
           "SyntheticInfo", "VehicleIdentity", "sample_identity", "build_vehicle_model", "camera_style",
           "encode_jpeg", "image_params", "render_identity", "render_image", "render_vehicle", "FACTOR_COLUMNS",
           "SYNTHETIC", "ensure_synthetic", "make_synthetic_veri", "read_factors", "sample_grid",
           "synthetic_config", "synthetic_seed"]
