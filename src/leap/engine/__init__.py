"""Training tasks: the inner loop every method shares."""

from leap.engine.inner import InnerLoop, TaskCurve, maml_task, test_error, train_task

__all__ = ["InnerLoop", "TaskCurve", "maml_task", "test_error", "train_task"]
