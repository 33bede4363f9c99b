"""Run directories: an output directory holds one run, or is refused before anything is written."""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from leap.util.errors import UsageError
from leap.util.files import atomic_write_json

RunMatcher = Callable[[dict[str, Any]], bool]


def meta_training_seconds(records: list[dict[str, Any]]) -> float:
    """The time of a run's meta-training: the sum of its meta-steps' own ``seconds`` in
    metrics.jsonl (``records``), so over every segment of a resumed run and without the
    time between segments."""
    return sum(r.get("seconds", 0.0) for r in records)


def holds_run(out: Path, matches: RunMatcher, record: str = "config.json") -> bool:
    """Whether ``out`` holds this run: its ``record`` (the JSON identity a run writes
    first, config.json for every run) exists and ``matches(parsed record)``. An unreadable
    record holds no run. The one answer to "does this directory hold this run?"."""
    try:
        existing = json.loads((Path(out) / record).read_text())
        return isinstance(existing, dict) and bool(matches(existing))
    except (OSError, ValueError, TypeError, KeyError):
        return False


def check_out_dir(out: Path, matches: RunMatcher, overwrite: bool, record: str = "config.json") -> None:
    """Refuse ``out`` when its ``record`` describes another run ([`holds_run()`][leap.engine.rundir.holds_run] is
    False) unless ``overwrite``, when it is not a directory, or when it is unwritable.
    With ``overwrite``, a directory holding anything leap did not write is refused too
    ([`foreign_entries()`][leap.engine.rundir.foreign_entries]): --overwrite deletes a leap run's files, never a
    user's."""
    out = Path(out)
    if (out / record).exists() and not overwrite:
        if not holds_run(out, matches, record):
            raise UsageError(f"{out} holds a different run (its {record} differs); use --overwrite to replace it")
    check_output_dir(out)
    if record == "config.json":  # a run directory: what the run will write must fit, before any work
        for name in RUN_FILES:
            if (out / name).exists() and not (out / name).is_file():
                raise UsageError(f"{out / name} is in the way: leap writes a file there; move it or use another --out")
        if (out / "checkpoints").exists() and not (out / "checkpoints").is_dir():
            raise UsageError(f"{out / 'checkpoints'} is in the way: leap writes a folder there; move it or use "
                             "another --out")
    foreign = foreign_entries(out) if overwrite else []
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise UsageError(f"{out} holds {foreign[0].name}{more}, which leap did not write: --overwrite replaces only "
                         "a leap run's directory; use another --out")


def check_output_dir(out: Path) -> None:
    """Refuse an output path that cannot become a writable directory, before any work:
    an existing file, a symbolic link that leads nowhere (a missing target or a loop), a
    name longer than the file system allows, a parent that is not a writable directory."""
    out = Path(out)
    try:
        name_max = os.pathconf("/" if not out.is_absolute() else out.anchor, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    long = [p for p in out.parts if len(os.fsencode(p)) > name_max]
    if long:
        raise UsageError(f"{out}: the name {long[0][:40]}... is longer than the file system allows ({name_max} bytes)")
    for part in (out, *out.parents):
        if part.is_symlink() and not part.exists():
            raise UsageError(f"{out}: {part} is a symbolic link that leads nowhere (to {os.readlink(part)}: a "
                             "missing target or a loop)")
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a directory")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{out}: {probe} is not a directory")
    try:  # the only reliable test of writability (root ignores permission bits)
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        raise UsageError(f"{out}: not writable ({err.strerror})") from err


# ---------------------------------------------------------------------- one writer per run
#: What a run writes into its directory (removed by --overwrite before the new run writes).
RUN_OUTPUTS = ("config.json", "metrics.jsonl", "init.safetensors", "checkpoints", "eval-*.json", "result.json",
               "rl-eval.json", "rl-eval.md", "rl-eval.png", "tensorboard")
LOCK_FILE = ".lock"
#: The files (not folders) a run writes into its directory.
RUN_FILES = ("config.json", "metrics.jsonl", "init.safetensors", "eval-test.json", "eval-val.json", "result.json",
             LOCK_FILE)
#: Files leap draws into a run directory besides what the run writes (``leap report``, ``rl-eval``,
#: the Jacobian study's directory).
REPORT_OUTPUTS = ("report.md", "figure3.png", "rl-curves.png", "jacobian.md", "jacobian.png")
#: JSON records leap writes, each an object with one of these keys.
_RECORD_KEYS = {"config.json": ("method",), "result.json": ("method",), "jacobian.json": ("protocol",),
                "rl-eval.json": ("runs",)}


def _written_by_leap(path: Path) -> bool:
    """Whether ``path``, an entry of a run directory, is one that leap writes: by name, and
    for its JSON records and folders by content (a user's config.json is not a run's)."""
    name = path.name
    if name == LOCK_FILE or (name.startswith(".") and name.endswith(".tmp")):
        return True  # the lock, a killed atomic write's temporary file
    if path.is_symlink():
        return False
    if name in _RECORD_KEYS or fnmatch.fnmatch(name, "eval-*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        keys = _RECORD_KEYS.get(name, ("test_error",))
        return isinstance(record, dict) and any(k in record for k in keys)
    if name == "checkpoints":
        return path.is_dir() and all(_written_by_leap(p) or (fnmatch.fnmatch(p.name, "checkpoint-*.pt") and p.is_file())
                                     for p in path.iterdir())
    if name == "tensorboard":
        return path.is_dir() and all(p.name.startswith("events.out.tfevents.") and p.is_file() for p in path.iterdir())
    return path.is_file() and (name in RUN_OUTPUTS or name in REPORT_OUTPUTS)


def foreign_entries(out: Path) -> list[Path]:
    """The entries of ``out`` that leap did not write (sorted; [] for a missing directory)."""
    out = Path(out)
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if not _written_by_leap(p))
_held: dict[Path, int] = {}  # run directories this process holds the lock of -> the lock's descriptor


def lock(out: Path) -> None:
    """Hold ``out``'s lock until this process ends (the OS releases it even after kill -9):
    a second process writing the same directory is refused with one line instead of
    mixing its files with this run's. Taking a lock this process holds is a no-op."""
    key = Path(out).resolve()
    if key in _held:
        return
    fd = os.open(key / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EACCES):
            raise UsageError(f"{out} is being written by another leap process (pid {holder}); wait for it to "
                             "finish or use another --out") from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[key] = fd


def release(out: Path) -> None:
    """Give ``out``'s lock back before the process ends (tests, long-lived callers)."""
    fd = _held.pop(Path(out).resolve(), None)
    if fd is not None:
        os.close(fd)


def remove_outputs(out: Path, outputs: tuple[str, ...] = RUN_OUTPUTS) -> None:
    """Delete what an earlier run wrote into ``out`` (hold the lock first)."""
    for pattern in outputs:
        for path in Path(out).glob(pattern):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)


def remove_orphan_temps(out: Path) -> None:
    """Delete the temporary files of atomic writes that a killed process left in ``out``
    and its checkpoints (hold the lock first: then no writer of this run is alive)."""
    for directory in (Path(out), Path(out) / "checkpoints"):
        for path in directory.glob(".*.tmp"):
            path.unlink(missing_ok=True)


def begin_run(out: Path, config: dict[str, Any], matches: RunMatcher, *, overwrite: bool, resume: bool) -> None:
    """Claim ``out`` for this run before it writes anything else: create it, take its lock,
    remove the old run's outputs when overwriting (unless resuming the run it holds),
    clean temporary files a killed writer left, and write config.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lock(out)
    if overwrite and not (resume and holds_run(out, matches)):
        remove_outputs(out)
    remove_orphan_temps(out)
    atomic_write_json(out / "config.json", config)
