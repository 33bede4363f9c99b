"""Run directories: an output directory holds one run, or is refused before anything is written."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from leap.util.errors import UsageError


def check_out_dir(out: Path, holds_this_run: Callable[[Path], bool], overwrite: bool) -> None:
    """Refuse ``out`` when its config.json describes another run (``holds_this_run(out)``
    is False) unless ``overwrite``, when it is not a directory, or when it is unwritable."""
    config_path = out / "config.json"
    if config_path.exists() and not overwrite:
        if not holds_this_run(out):
            raise UsageError(f"{out} holds a different run (its config.json differs); use --overwrite to replace it")
    elif out.exists() and not out.is_dir():
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
