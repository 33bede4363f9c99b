"""Training tasks: the inner loop every method shares.

These names are imported from ``leap.engine.inner`` when first used (``leap.util.lazy``),
so that the engine's torch-free modules (the run-directory policy, ``leap.engine.rundir``)
import without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from leap.util.lazy import lazy_attributes

if TYPE_CHECKING:
    from leap.engine.inner import InnerLoop, TaskCurve, maml_task, test_error, test_metrics, train_task

__all__ = ["InnerLoop", "TaskCurve", "maml_task", "test_error", "test_metrics", "train_task"]
__getattr__, __dir__ = lazy_attributes(__name__, {"leap.engine.inner": __all__})
