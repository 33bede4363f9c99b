"""Optional TensorBoard scalars beside metrics.jsonl (``--tensorboard``).

metrics.jsonl stays the record of a run (reports, resume and rollback read it); the event
files under ``OUT/tensorboard/`` mirror its numeric fields for browsing, one scalar per field
and meta-step. TensorBoard is not a dependency: `require()` refuses the option in one
line when the ``tensorboard`` package is missing.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

from leap.util.errors import UsageError

#: The run directory's subfolder that holds the event files.
TENSORBOARD_DIR = "tensorboard"


def require() -> None:
    """Raise [`UsageError`][leap.util.errors.UsageError] unless TensorBoard's writer can be imported."""
    if importlib.util.find_spec("tensorboard") is None:
        raise UsageError("--tensorboard needs the tensorboard package: pip install tensorboard")


class TensorBoardLog:
    """Writes each metrics record's numbers as scalars at its meta-step.

    ``first_step`` is the first meta-step this process will write: events a previous
    segment of the run wrote at or after it (a run resumed from an earlier checkpoint) are
    purged, so the curves show the run as metrics.jsonl does.
    """

    def __init__(self, out: Path, first_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter  # imported only when asked for

        self._writer = SummaryWriter(str(Path(out) / TENSORBOARD_DIR), purge_step=first_step)

    def write(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        for key, value in record.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                self._writer.add_scalar(key, value, global_step=step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
