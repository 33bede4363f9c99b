"""Files: the learned initialization (safetensors), checkpoints and atomic writes.

Nothing here unpickles: inits are safetensors, JSON is JSON. torch and safetensors are
imported by the functions that read or write tensors, so the JSON and atomic-write
helpers (the run-directory policy, the reports) come without them.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leap.util.errors import CorruptFileError

if TYPE_CHECKING:
    import torch
    from torch import Tensor


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_files_of(path: str | os.PathLike) -> list[Path]:
    """The temporary files that atomic writes of ``path`` create beside it (a killed
    writer leaves its own behind)."""
    path = Path(path)
    return list(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename: readers see the
    old file or the complete new one, never a partial write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's file is private (0600); the result honours the umask
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


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """A report (markdown, a table) written atomically: a killed writer leaves the old file."""
    atomic_write_bytes(path, text.encode())


def read_json_record(path: str | os.PathLike, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON object leap wrote (a result, a study, a report's source) with the ``required``
    keys; anything else is a [`CorruptFileError`][leap.util.errors.CorruptFileError] naming the file (one line)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise CorruptFileError(f"{path}: not a readable JSON record ({err})") from err
    if not isinstance(record, dict):
        raise CorruptFileError(f"{path}: not a JSON object")
    return require_keys(record, path, required)


def require_keys(record: dict[str, Any], path: str | os.PathLike, required: tuple[str, ...]) -> dict[str, Any]:
    """``record`` (read from ``path``) when it holds every ``required`` key, else a
    [`CorruptFileError`][leap.util.errors.CorruptFileError] naming the file and the keys it lacks."""
    missing = [k for k in required if k not in record]
    if missing:
        raise CorruptFileError(f"{path}: lacks {', '.join(missing)} (damaged, or not written by leap)")
    return record


def read_optional_record(path: str | os.PathLike) -> tuple[dict[str, Any] | None, str | None]:
    """[`read_json_record()`][leap.util.files.read_json_record] for a file that may not exist: ``(record, None)``,
    ``(None, why)`` when it is damaged, ``(None, None)`` when there is none."""
    if not Path(path).is_file():
        return None, None
    try:
        return read_json_record(path), None
    except CorruptFileError as err:
        return None, str(err)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (metrics.jsonl); damage is a
    [`CorruptFileError`][leap.util.errors.CorruptFileError]
    naming the file and the line."""
    records = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            try:
                record = json.loads(line)
            except ValueError as err:
                raise CorruptFileError(f"{path}: line {number} is not JSON ({err})") from err
            if not isinstance(record, dict):
                raise CorruptFileError(f"{path}: line {number} is not a JSON object")
            records.append(record)
    return records


def save_figure(fig: Any, path: str | os.PathLike) -> None:
    """A matplotlib figure rendered in memory, then written atomically: a killed
    ``leap report`` never leaves a truncated image. The format follows the suffix."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png")
    atomic_write_bytes(path, buffer.getvalue())


def non_finite(state: dict[str, Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``state`` that hold a NaN or an infinity."""
    import torch

    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def check_state(state: dict[str, Tensor], reference: dict[str, Tensor], where: str) -> None:
    """Refuse ([`CorruptFileError`][leap.util.errors.CorruptFileError] naming ``where``) a state that does not fit
    ``reference`` (a model's state dict): other keys, shapes or dtypes, or non-finite values."""
    missing, unexpected = sorted(set(reference) - set(state)), sorted(set(state) - set(reference))
    if missing or unexpected:
        raise CorruptFileError(f"{where}: does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
                               f"{' (and more)' if len(missing) > 3 or len(unexpected) > 3 else ''}")
    for name, ref in reference.items():
        if state[name].shape != ref.shape or state[name].dtype != ref.dtype:
            raise CorruptFileError(f"{where}: {name} is {state[name].dtype} {tuple(state[name].shape)}, the model's "
                                   f"is {ref.dtype} {tuple(ref.shape)}")
    bad = non_finite(state)
    if bad:
        raise CorruptFileError(f"{where}: non-finite values in {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}")


def save_init(path: str | os.PathLike, state: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save an initialization (name -> tensor) as safetensors, atomically. A non-finite
    one is refused (ValueError): an init file always holds numbers."""
    bad = non_finite(state)
    if bad:
        raise ValueError(f"{path}: refusing to save a non-finite initialization ({', '.join(bad[:3])})")
    atomic_write_bytes(path, init_bytes(state, metadata))


def init_bytes(state: dict[str, Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """The bytes [`save_init()`][leap.util.files.save_init] writes for ``state`` (their sha256 names an init that
    was never saved, e.g. θ0 read from a checkpoint)."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    return save(tensors, metadata=metadata)


def load_init(path: str | os.PathLike, device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """Load an initialization written by [`save_init()`][leap.util.files.save_init]; a clear error names the file."""
    return read_init(path, device)[0]


def read_init(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[dict[str, Tensor], str]:
    """An initialization (a run directory's init.safetensors, or the file) and the sha256
    of the bytes it was read from: one read, so the digest names exactly what was loaded
    (results record it: [`file_sha256()`][leap.util.files.file_sha256] of the same file must give it back)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if path.is_dir():
        path = path / "init.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such initialization file")
    try:
        data = path.read_bytes()
        state = load(data)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CorruptFileError(f"{path}: not a readable safetensors file ({err})") from err
    return {k: v.to(device) for k, v in state.items()}, hashlib.sha256(data).hexdigest()


def file_sha256(path: str | os.PathLike) -> str | None:
    """The sha256 of a file's bytes, or None when it cannot be read (no such file)."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


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


#: A checkpoint is torch.save bytes followed by this mark and the sha256 of those bytes.
CHECKSUM_MARK = b"\nleap-sha256:"


def save_checkpoint(directory: str | os.PathLike, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` as checkpoint ``step`` atomically, with a checksum, then delete all
    but the newest ``keep`` checkpoints (the previous one survives until the new one is
    complete)."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    path = checkpoint_path(directory, step)
    atomic_write_bytes(path, payload + CHECKSUM_MARK + hashlib.sha256(payload).hexdigest().encode())
    for _, old in list_checkpoints(directory)[:-keep] if keep > 0 else []:  # keep 0: all
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary unpickling), after
    verifying its checksum: a flipped bit is a [`CorruptFileError`][leap.util.errors.CorruptFileError], never a silently
    different run. (Checkpoints written before checksums existed load unverified.)"""
    import torch

    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise CorruptFileError(f"{path}: cannot be read ({err.strerror})") from err
    cut = data.rfind(CHECKSUM_MARK)
    if cut >= 0:
        payload, digest = data[:cut], data[cut + len(CHECKSUM_MARK):]
        if hashlib.sha256(payload).hexdigest().encode() != digest:
            raise CorruptFileError(f"{path}: checksum mismatch (the file was damaged after it was written)")
        data = payload
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise CorruptFileError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or "step" not in state:
        raise CorruptFileError(f"{path}: not a leap checkpoint (no 'step' entry)")
    return state


def load_latest_checkpoint(directory: str | os.PathLike,
                           check: Callable[[dict[str, Any], Path], None] | None = None,
                           ) -> tuple[dict[str, Any], Path] | None:
    """The newest checkpoint that loads and passes ``check(state, path)`` (which raises
    [`CorruptFileError`][leap.util.errors.CorruptFileError] for a state that does not fit the run); newer ones that do
    not are skipped with a warning."""
    import warnings

    for _, path in reversed(list_checkpoints(directory)):
        try:
            state = load_checkpoint(path)
            if check is not None:
                check(state, path)
            return state, path
        except CorruptFileError as err:
            warnings.warn(f"{err}; falling back to the previous checkpoint", stacklevel=2)
    return None
