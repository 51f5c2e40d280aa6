"""Files written atomically and identified by their hash: the two things every writer and reader of run
folders, checkpoints and results shares (no other deap_lib import: the bottom layer).

* :func:`atomic_write` / :func:`atomic_write_text`: the old file or the complete new one, never a torn one;
  :func:`remove_stale_temps` removes what a SIGKILL mid-write leaves.
* :func:`file_sha256` / :func:`state_dict_sha256`: a checkpoint file's hash, and a hash of the tensors
  themselves (the same weights saved twice hash alike).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import torch

PathLike = Union[str, "os.PathLike[str]"]


def _fsync_dir(directory: Path) -> None:
    """Persist a rename on POSIX; silently skipped where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: PathLike, write: Callable[[Any], None], *, binary: bool = True) -> Path:
    """Call ``write(fileobj)`` on a temp file in ``path``'s folder, fsync it, then ``os.replace`` it.

    Either the old file or the complete new one is at ``path``; on any exception the temp file is removed
    and the old file is untouched. (A SIGKILL mid-write can leave a ``.<name>.*.tmp`` file behind, never a
    truncated ``path``; :func:`remove_stale_temps` cleans those.)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text), binary=False)


def remove_stale_temps(path: PathLike) -> list[Path]:
    """Delete leftover temp files of :func:`atomic_write` for ``path`` (e.g. after a SIGKILL)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    for p in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed


@contextlib.contextmanager
def folder_lock(folder: PathLike, on_wait: Optional[Callable[[], None]] = None):
    """An exclusive advisory ``flock`` on ``folder`` itself (created if missing; no lock file left behind;
    released when the holder exits, even killed). When another process holds it, ``on_wait()`` is called
    once and the caller waits for it. POSIX only; elsewhere a no-op."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):  # pragma: no cover - non-POSIX
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def is_locked(folder: PathLike) -> bool:
    """Whether some process (this one through another descriptor included) holds :func:`folder_lock` on
    ``folder``; False for a missing folder and where flock does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):  # pragma: no cover - non-POSIX
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def file_sha256(path: Union[str, Path], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def state_dict_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over (name, dtype, shape, raw bytes) of every tensor, in sorted key order."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key]
        if not isinstance(t, torch.Tensor):
            h.update(f"{key}={t!r};".encode())
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
