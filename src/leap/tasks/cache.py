"""The decode cache shared by the dataset loaders (Omniglot, Multi-CV).

A dataset is decoded once into uint8 arrays and stored as one ``.npz`` (no pickle:
read with ``allow_pickle=False``) whose ``key`` entry fingerprints the source files.
A cache is an optimization: an unreadable or stale one is ignored with a warning and
rebuilt, and failing to write one never fails a run.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from leap.util.files import atomic_write_bytes, temp_files_of

T = TypeVar("T")


def default_cache_dir() -> Path:
    """Where decoded datasets are cached unless a caller names a directory:
    ``$LEAP_CACHE_DIR``, else ``$XDG_CACHE_HOME/leap`` (``~/.cache/leap``). Never inside a
    data directory: data directories are read-only to leap (cache file names carry a hash
    of the data directory, so several data directories share one cache directory)."""
    override = os.environ.get("LEAP_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "leap"


#: A cache's temporary file older than this was left by a killed writer (a write takes seconds).
ABANDONED_AFTER_S = 3600.0


def remove_abandoned_temps(path: Path) -> None:
    """Delete the temporary files of ``path``'s atomic writes that a killed process left
    (older than `ABANDONED_AFTER_S`: a live writer's is seconds old). Caches have no
    lock, so age tells a dead writer's file from one being written now."""
    now = time.time()
    for temp in temp_files_of(path):
        with contextlib.suppress(OSError):
            if now - temp.stat().st_mtime > ABANDONED_AFTER_S:
                temp.unlink()


def read_cache(path: Path, key: str, build: Callable[[dict[str, np.ndarray]], T], what: str) -> T | None:
    """``build(arrays)`` from the cache at ``path`` if it exists and holds ``key``; None
    otherwise. ``build`` may raise ``ValueError``/``KeyError`` to reject the contents.
    ``what`` names the dataset in the warning."""
    remove_abandoned_temps(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        if str(arrays["key"]) != key:
            return None
        return build(arrays)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        warnings.warn(f"{path}: ignoring an unreadable {what} cache ({err}); decoding again", stacklevel=3)
        return None


def write_cache(path: Path, arrays: dict[str, np.ndarray], stale: str, what: str) -> None:
    """Write ``arrays`` to ``path`` atomically after removing the files matching the glob
    ``stale`` (older caches of the same source) beside it."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for old in path.parent.glob(stale):
            if old != path:
                old.unlink(missing_ok=True)
        atomic_write_bytes(path, buf.getvalue())
    except OSError as err:  # a cache is an optimization: never fail the run for it
        warnings.warn(f"{path}: could not write the {what} cache ({err}); the next run decodes again",
                      stacklevel=3)
