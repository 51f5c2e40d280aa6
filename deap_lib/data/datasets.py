"""Re-ID dataset parsers: folder / list layouts -> ``ReIDDataset`` (lists of ``(path, pid, camid)``).

Conventions (docs/decisions.rst §Decisions): pid / camid are matched on the file's *basename* (never the whole
path), files are sorted, training pids are relabelled 0..N-1 in sorted order, query / gallery keep
their raw pids, camids are 0-based. A missing folder raises ``DatasetNotFoundError`` (a
``FileNotFoundError``) naming the path and showing the expected tree; file names that do not fit the
dataset's pattern raise ``DatasetFormatError`` (count and first examples) unless ``strict=False``, in
which case they are skipped with a warning.
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple


from deap_lib.registry import Registry

IMAGE_EXTS = (".jpg", ".jpeg", ".png")


class Item(NamedTuple):
    """One image: absolute-or-root-relative path, identity, 0-based camera."""

    path: str
    pid: int
    camid: int


class DatasetNotFoundError(FileNotFoundError):
    """A dataset root or one of its sub-folders / list files is missing."""


class DatasetFormatError(ValueError):
    """File names or list lines that do not follow the dataset's naming convention."""


@dataclass(repr=False)
class ReIDDataset:
    """A parsed re-ID dataset. ``train`` pids are 0..num_train_pids-1; query/gallery pids are raw."""

    name: str
    root: str
    train: List[Item]
    query: List[Item]
    gallery: List[Item]
    meta: Dict = field(default_factory=dict)

    @property
    def num_train_pids(self) -> int:
        return len({it.pid for it in self.train})

    @property
    def num_train_cams(self) -> int:
        return len({it.camid for it in self.train})

    @property
    def num_train_images(self) -> int:
        return len(self.train)

    def summary(self) -> Dict[str, Dict[str, int]]:
        """``{split: {"ids", "images", "cameras"}}`` for train / query / gallery."""
        return {s: {"ids": len({it.pid for it in items}), "images": len(items),
                    "cameras": len({it.camid for it in items})}
                for s, items in (("train", self.train), ("query", self.query), ("gallery", self.gallery))}

    def summary_table(self) -> str:
        rows = [f"{self.name} ({self.root})", f"  {'subset':8s} {'# ids':>7s} {'# images':>9s} {'# cameras':>10s}"]
        for s, d in self.summary().items():
            rows.append(f"  {s:8s} {d['ids']:7d} {d['images']:9d} {d['cameras']:10d}")
        return "\n".join(rows)

    def __repr__(self) -> str:
        s = self.summary()
        return (f"ReIDDataset(name={self.name!r}, root={self.root!r}, train={s['train']['ids']} ids/"
                f"{s['train']['images']} imgs, query={s['query']['images']}, gallery={s['gallery']['images']})")


DATASETS: Registry = Registry("dataset")


def register_dataset(name: str, *, layout: str = "", override: bool = False):
    """Decorator registering ``fn(root: Path, *, strict: bool, **kw) -> ReIDDataset`` under ``name``.

    ``layout`` (an ASCII tree) is shown in the error when the root does not exist.
    """

    def deco(fn: Callable[..., ReIDDataset]) -> Callable[..., ReIDDataset]:
        fn.layout = layout  # type: ignore[attr-defined]
        DATASETS.register(name, fn, override=override)
        return fn

    return deco


def default_data_root() -> Path:
    """``$DEAP_DATA`` if set, else the repository's ``data/`` folder."""
    env = os.environ.get("DEAP_DATA")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "data"


def build_dataset(name: str, root=None, *, strict: bool = True, **kw) -> ReIDDataset:
    """Parse dataset ``name`` (see ``DATASETS.names()``) at or below ``root`` (default ``default_data_root()``)."""
    fn = DATASETS.get(name)
    root = Path(root).expanduser() if root is not None else default_data_root()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DatasetNotFoundError(f"{name}: data root '{root}' {what}.\nExpected layout:\n"
                                   f"{getattr(fn, 'layout', '')}")
    return fn(root, strict=strict, **kw)


# ----------------------------------------------------------------------------------------------
# helpers

def find_layout(name: str, root: Path, subdirs: Sequence[str], layouts: Sequence[Sequence[str]],
                layout_text: str) -> Tuple[Path, Tuple[str, ...]]:
    """The first of ``root``, ``root/<subdir>`` holding every entry of one of ``layouts``.

    Raises ``DatasetNotFoundError`` naming the closest candidate and its missing entries.
    """
    bases = [root] + [root / s for s in subdirs]
    best: Optional[Tuple[int, Path, List[str]]] = None
    for base in bases:
        if not base.is_dir():
            continue
        for lay in layouts:
            missing = [e for e in lay if not (base / e).exists()]
            if not missing:
                return base, tuple(lay)
            score = len(lay) - len(missing)
            if best is None or score > best[0]:
                best = (score, base, [str(base / e) for e in missing])
    if best is not None and best[0] > 0:
        detail = f"'{best[1]}' looks like {name} but is missing: " + ", ".join(f"'{m}'" for m in best[2])
    else:
        detail = "searched " + ", ".join(f"'{b}'" for b in bases)
    raise DatasetNotFoundError(f"{name}: no complete dataset under '{root}': {detail}.\n"
                               f"Expected layout:\n{layout_text}")


def _report(problems: List[str], what: str, strict: bool) -> None:
    if not problems:
        return
    ex = "; ".join(problems[:5])
    msg = f"{len(problems)} {what} (first examples: {ex})"
    if strict:
        raise DatasetFormatError(msg + ". Fix or remove them, or pass strict=False to skip them.")
    warnings.warn(msg + "; skipped (strict=False).", stacklevel=3)


def list_images(folder: Path) -> List[Path]:
    """Image files directly in ``folder``, sorted by name."""
    with os.scandir(folder) as it:
        names = sorted(e.name for e in it if e.is_file() and e.name.lower().endswith(IMAGE_EXTS))
    return [folder / n for n in names]


def parse_folder(folder: Path, pattern: str, *, dataset: str, strict: bool, cam_base: int = 1,
                 pid_range: Optional[Tuple[int, int]] = None, cam_range: Optional[Tuple[int, int]] = None,
                 drop_pids: Iterable[int] = (-1,), fixed_camid: Optional[int] = None) -> List[Item]:
    """Parse ``folder/*.jpg`` whose basenames match ``pattern`` (groups: pid[, cam]).

    camid = cam - ``cam_base`` (or ``fixed_camid`` when the pattern has no camera group).
    """
    rx = re.compile(pattern)
    drop = set(drop_pids)
    items: List[Item] = []
    bad: List[str] = []
    for f in list_images(folder):
        m = rx.match(f.name)
        if m is None:
            bad.append(f"'{f.name}' does not match {pattern}")
            continue
        pid = int(m.group(1))
        if pid in drop:
            continue
        cam = int(m.group(2)) if fixed_camid is None else None
        if pid_range is not None and not pid_range[0] <= pid <= pid_range[1]:
            bad.append(f"'{f.name}': pid {pid} outside {pid_range[0]}..{pid_range[1]}")
            continue
        if cam is not None and cam_range is not None and not cam_range[0] <= cam <= cam_range[1]:
            bad.append(f"'{f.name}': camera {cam} outside {cam_range[0]}..{cam_range[1]}")
            continue
        if cam is not None and cam < cam_base:
            bad.append(f"'{f.name}': camera {cam} below the first camera index {cam_base}")
            continue
        items.append(Item(str(f), pid, fixed_camid if cam is None else cam - cam_base))
    _report(bad, f"file name(s) in '{folder}' do not follow the {dataset} naming", strict)
    return items


def relabel(items: Sequence[Item]) -> List[Item]:
    """Map pids to 0..N-1 in sorted pid order."""
    lut = {p: i for i, p in enumerate(sorted({it.pid for it in items}))}
    return [Item(it.path, lut[it.pid], it.camid) for it in items]


def _check_nonempty(items: List[Item], where: str, dataset: str) -> None:
    if not items:
        raise DatasetFormatError(f"{dataset}: no usable images in '{where}'")


def _folder_dataset(name: str, root: Path, *, strict: bool, subdirs: Sequence[str],
                    layouts: Sequence[Sequence[str]], layout_text: str, pattern: str, **parse_kw) -> ReIDDataset:
    base, lay = find_layout(name, root, subdirs, layouts, layout_text)
    splits = []
    for sub in lay:
        items = parse_folder(base / sub, pattern, dataset=name, strict=strict, **parse_kw)
        _check_nonempty(items, str(base / sub), name)
        splits.append(items)
    train, query, gallery = splits
    return ReIDDataset(name, str(base), relabel(train), query, gallery, meta={"layout": "/".join(lay)})


# ----------------------------------------------------------------------------------------------
# VeRi-776

VERI_LAYOUT = """\
  <root>/                     (or <root>/veri/, <root>/VeRi/, <root>/VeRi-776/)
    image_train/  0001_c001_00016450_0.jpg ...   (release layout; or train/)
    image_query/  ...                            (or query/)
    image_test/   ...  (gallery)                 (or gallery/)
  file names VVVV_cCCC_FFFFFFFF_X.jpg: vehicle id 0001-0776, camera c001-c020"""


@register_dataset("veri", layout=VERI_LAYOUT)
def veri(root: Path, *, strict: bool = True) -> ReIDDataset:
    """VeRi-776 (release or renamed layout); also reads ``make_synthetic_veri`` output."""
    return _folder_dataset("veri", root, strict=strict, subdirs=("veri", "VeRi", "VeRi-776", "VeRi776"),
                           layouts=(("image_train", "image_query", "image_test"), ("train", "query", "gallery")),
                           layout_text=VERI_LAYOUT, pattern=r"(-?\d+)_c(\d+)", pid_range=(0, 776),
                           cam_range=(1, 20))


# ----------------------------------------------------------------------------------------------
# Market-1501 / DukeMTMC-reID

MARKET_LAYOUT = """\
  <root>/                     (or <root>/market1501/, <root>/Market-1501-v15.09.15/)
    bounding_box_train/  0002_c1s1_000451_03.jpg ...   (or train/)
    query/               ...
    bounding_box_test/   ...  (gallery; pid 0000 = distractor, -1 = junk)   (or gallery/)
  file names PPPP_cC...: person id, camera 1-6"""

DUKE_LAYOUT = """\
  <root>/                     (or <root>/DukeMTMC-reID/, <root>/dukemtmc/)
    bounding_box_train/  0005_c2_f0046985.jpg ...   (or train/)
    query/               ...
    bounding_box_test/   ...  (gallery)            (or gallery/)
  file names PPPP_cC_fFFFFFFF.jpg: person id, camera 1-8"""


@register_dataset("market1501", layout=MARKET_LAYOUT)
def market1501(root: Path, *, strict: bool = True) -> ReIDDataset:
    """Market-1501: junk pid -1 dropped everywhere, distractors (pid 0) kept in the gallery."""
    return _folder_dataset("market1501", root, strict=strict,
                           subdirs=("market1501", "Market-1501-v15.09.15", "Market-1501", "Market1501"),
                           layouts=(("bounding_box_train", "query", "bounding_box_test"),
                                    ("train", "query", "gallery")),
                           layout_text=MARKET_LAYOUT, pattern=r"(-?\d+)_c(\d)", cam_range=(1, 6))


@register_dataset("dukemtmc", layout=DUKE_LAYOUT)
def dukemtmc(root: Path, *, strict: bool = True) -> ReIDDataset:
    """DukeMTMC-reID (cameras 1-8)."""
    return _folder_dataset("dukemtmc", root, strict=strict,
                           subdirs=("dukemtmc", "DukeMTMC-reID", "dukemtmc-reid", "DukeMTMC"),
                           layouts=(("bounding_box_train", "query", "bounding_box_test"),
                                    ("train", "query", "gallery")),
                           layout_text=DUKE_LAYOUT, pattern=r"(-?\d+)_c(\d)", cam_range=(1, 8))


# ----------------------------------------------------------------------------------------------
# MSMT17

MSMT_LAYOUT = """\
  <root>/                     (or <root>/MSMT17_V1/, <root>/MSMT17/, <root>/msmt17/)
    official list layout:
      train/0000/0000_000_01_0303morning_0015_0.jpg ...   test/...
      list_train.txt  list_val.txt  list_query.txt  list_gallery.txt   lines "<path relative to train/ or test/> <pid>"
      camera = 3rd field of the file name (01-15)
    or flattened, renamed layout:
      train/  query/  test/ (or gallery/)   files PPPP_cCC_*.jpg (camera 1-based)"""


def _read_list(path: Path, *, strict: bool) -> List[Tuple[str, int]]:
    """Lines '<image> <id>' of a list file."""
    out, bad = [], []
    for ln, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not re.fullmatch(r"-?\d+", parts[1]):
            bad.append(f"line {ln}: {line.strip()!r} (expected '<image> <id>')")
            continue
        out.append((parts[0], int(parts[1])))
    _report(bad, f"malformed line(s) in '{path}'", strict)
    return out


def _msmt_items(path: Path, img_dir: Path, *, strict: bool) -> List[Item]:
    rx = re.compile(r"(\d+)_(\d+)_(\d+)_")
    items, bad, missing = [], [], []
    for rel, pid in _read_list(path, strict=strict):
        base = os.path.basename(rel)
        m = rx.match(base)
        if m is None:
            bad.append(f"'{rel}' does not match PPPP_NNN_CC_...")
            continue
        full = img_dir / rel
        if not full.is_file():
            missing.append(f"'{full}'")
            continue
        items.append(Item(str(full), pid, int(m.group(3)) - 1))
    _report(bad, f"entries of '{path}' do not follow the MSMT17 naming", strict)
    _report(missing, f"image(s) listed in '{path}' are missing", strict)
    return items


@register_dataset("msmt17", layout=MSMT_LAYOUT)
def msmt17(root: Path, *, strict: bool = True, use_val: bool = True, cam_base: int = 1) -> ReIDDataset:
    """MSMT17: official list files (train = list_train + list_val when ``use_val``) or flattened folders."""
    name = "msmt17"
    subdirs = ("MSMT17_V1", "MSMT17_V2", "MSMT17", "msmt17")
    official = ("train", "test", "list_train.txt", "list_query.txt", "list_gallery.txt")
    base, lay = find_layout(name, root, subdirs, (official, ("train", "query", "test"), ("train", "query", "gallery")),
                            MSMT_LAYOUT)
    if lay == official:
        train = _msmt_items(base / "list_train.txt", base / "train", strict=strict)
        if use_val and (base / "list_val.txt").is_file():
            train += _msmt_items(base / "list_val.txt", base / "train", strict=strict)
        train.sort(key=lambda it: it.path)
        query = _msmt_items(base / "list_query.txt", base / "test", strict=strict)
        gallery = _msmt_items(base / "list_gallery.txt", base / "test", strict=strict)
        for items, where in ((train, "list_train.txt"), (query, "list_query.txt"), (gallery, "list_gallery.txt")):
            _check_nonempty(items, str(base / where), name)
        return ReIDDataset(name, str(base), relabel(train), query, gallery, meta={"layout": "official lists"})
    splits = []
    for sub in lay:
        items = parse_folder(base / sub, r"(-?\d+)_c(\d+)", dataset=name, strict=strict, cam_base=cam_base)
        _check_nonempty(items, str(base / sub), name)
        splits.append(items)
    return ReIDDataset(name, str(base), relabel(splits[0]), splits[1], splits[2], meta={"layout": "/".join(lay)})
