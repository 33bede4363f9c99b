"""The data directory: finding its datasets and loading each once, through the cache."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

from leap.tasks.cache import default_cache_dir, read_cache, write_cache
from leap.tasks.containers import Container, hidden
from leap.tasks.multicv.formats import DatasetSource, _entry_stem, recognize
from leap.tasks.multicv.images import CACHE_FORMAT, ENV_VAR, ImageSet


# ---------------------------------------------------------------------- the data directory
def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The Multi-CV directory: ``data_dir``, else ``$LEAP_MULTICV_DIR``; it must exist."""
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get(ENV_VAR) or None
        if data_dir is None:
            raise FileNotFoundError(f"no Multi-CV data directory given (pass data_dir / --data-dir, or set "
                                    f"{ENV_VAR}); it holds one folder or archive per dataset")
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such directory (the Multi-CV data directory holds one folder or "
                                "archive per dataset: IDX, ImageFolder, GTSRB, CIFAR binary or SVHN layouts)")
    return path


def discover_datasets(data_dir: str | os.PathLike | None,
                      refused: dict[str, str] | None = None) -> dict[str, DatasetSource]:
    """Every dataset the directory holds, by name (sorted). Entries of no known layout
    are skipped; two entries with one name keep the first (with a warning); entries in
    a layout that is refused (pickle) are warned about and, if ``refused`` is given,
    recorded there as entry name -> reason."""
    root = resolve_data_dir(data_dir)
    found: dict[str, DatasetSource] = {}
    for entry in sorted(root.iterdir()):
        if hidden(entry.name):
            continue
        container = Container(entry)
        if container.kind == "file":
            continue
        result = recognize(container, entry.name)
        if isinstance(result, str):
            warnings.warn(result, stacklevel=2)
            if refused is not None:
                refused[_entry_stem(entry.name)] = result
        elif result is not None:
            if result.name in found:
                warnings.warn(f"{entry}: a second dataset named {result.name!r} (first: {found[result.name].path}); "
                              "ignored", stacklevel=2)
            else:
                found[result.name] = result
    return dict(sorted(found.items()))


def load_dataset(source: DatasetSource, cache_dir: str | os.PathLike | None = None) -> ImageSet:
    """Decode ``source`` once and cache it (``multicv-<name>-<dir>-<key>.npz``)."""
    lines = [CACHE_FORMAT, source.kind, source.prefix, *source.container.fingerprint()]
    key = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    dir_tag = hashlib.sha256(str(source.path.resolve()).encode()).hexdigest()[:8]
    path = cache / f"multicv-{source.name}-{dir_tag}-{key[:24]}.npz"
    data = read_cache(path, key, lambda arrays: _checked(ImageSet.from_arrays(arrays), path), "Multi-CV")
    if data is None:
        try:
            data = source.decode()
        finally:
            source.container.close()
        write_cache(path, data.to_arrays(key), f"multicv-{source.name}-{dir_tag}-*.npz", "Multi-CV")
    return data


def _checked(data: ImageSet, path: Path) -> ImageSet:
    data.check(str(path))  # a cache that decodes to wrong shapes is rejected (and rebuilt)
    return data
