"""Files: the learned initialization (safetensors), checkpoints and atomic writes.

Nothing here unpickles: inits are safetensors, JSON is JSON.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor

from leap.util.errors import CorruptFileError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename: readers see the
    old file or the complete new one, never a partial write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_init(path: str | os.PathLike, state: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save an initialization (name -> tensor) as safetensors, atomically."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def load_init(path: str | os.PathLike, device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """Load an initialization written by :func:`save_init`; a clear error names the file."""
    path = Path(path)
    if path.is_dir():
        path = path / "init.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such initialization file")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CorruptFileError(f"{path}: not a readable safetensors file ({err})") from err


# ---------------------------------------------------------------------- run checkpoints
CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_SUFFIX = ".pt"


def checkpoint_path(directory: str | os.PathLike, step: int) -> Path:
    return Path(directory) / f"{CHECKPOINT_PREFIX}{step:08d}{CHECKPOINT_SUFFIX}"


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``directory`` (temporary files excluded), oldest first."""
    directory = Path(directory)
    found = []
    if directory.is_dir():
        for path in directory.glob(f"{CHECKPOINT_PREFIX}*{CHECKPOINT_SUFFIX}"):
            digits = path.name[len(CHECKPOINT_PREFIX) : -len(CHECKPOINT_SUFFIX)]
            if digits.isdigit():
                found.append((int(digits), path))
    return sorted(found)


def save_checkpoint(directory: str | os.PathLike, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` as checkpoint ``step`` atomically, then delete all but the newest
    ``keep`` checkpoints (the previous one survives until the new one is complete)."""
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    path = checkpoint_path(directory, step)
    atomic_write_bytes(path, buffer.getvalue())
    for _, old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary unpickling)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise CorruptFileError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or "step" not in state:
        raise CorruptFileError(f"{path}: not a leap checkpoint (no 'step' entry)")
    return state


def load_latest_checkpoint(directory: str | os.PathLike) -> tuple[dict[str, Any], Path] | None:
    """The newest readable checkpoint; unreadable newer ones are skipped with a warning."""
    import warnings

    for _, path in reversed(list_checkpoints(directory)):
        try:
            return load_checkpoint(path), path
        except CorruptFileError as err:
            warnings.warn(f"{err}; falling back to the previous checkpoint", stacklevel=2)
    return None
