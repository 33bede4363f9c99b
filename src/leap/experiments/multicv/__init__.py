"""The Multi-CV protocol (section 4.2, appendix E, Table 5): leave one dataset out,
pretrain on the others with one method, train on the held-out dataset from the result.

A run reads top to bottom:

1. **Pretraining** (every method but ``none``): per meta-step, draw ``meta_batch``
   datasets from the pool (uniformly, with replacement) and train on each for at most
   ``task_epochs`` epochs (SGD, cosine annealing over that budget), stopping a task once
   its validation error has not improved in ``patience`` consecutive checks. Pretraining
   stops after ``meta_steps`` meta-steps, or once the meta-batch's mean validation error
   has not improved in ``meta_patience`` consecutive meta-steps.

   - ``leap``: every task starts from θ0 (the encoder) with a fresh head; the Leap hook
     (energy metric, d2) follows each task's training and Adam (lr 0.01) steps θ0 after
     the meta-batch.
   - ``finetune``: multi-headed finetuning, one encoder carried from task to task and
     one head per pretraining dataset.
   - ``hat``: `leap.baselines.HATNet`, one mask and head per pretraining dataset.
   - ``progressive``: `leap.baselines.ProgressiveNet`, one column per pretraining
     dataset, each reading all the others.

2. **Evaluation**: train on the held-out dataset for at most ``eval_epochs`` epochs with
   the same early stopping (leap, finetune, none: the learned or random encoder with a
   fresh head; hat: a new mask and head; progressive: a new column reading every
   pretraining column), restore the parameters of the best validation check, and
   report Table 1's columns: test error, training error (on the whole training set)
   and the AUC, 100 x the mean minibatch training error over the steps taken.

A validation check costs a pass over the validation set; ``check_every`` task steps
apart (1 in the paper) and ``patience`` counted in checks. Every random choice comes
from generators derived from (seed, held-out dataset, purpose, meta-step, index), so
methods are evaluated on the same minibatches, and a run resumes from its last
meta-step checkpoint exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from leap.experiments.multicv.commands import add_multicv_options, sweep_from_args, train_from_args
from leap.experiments.multicv.config import METHODS, TABLE_METHODS, Budget, MultiCVConfig
from leap.util.lazy import lazy_attributes

if TYPE_CHECKING:
    from leap.experiments.multicv.methods import LeapMethod, Method, make_method
    from leap.experiments.multicv.report import collect_results, multicv_table, write_multicv_report
    from leap.experiments.multicv.run import MultiCVTrainer, multicv_sweep, run_multicv
    from leap.experiments.multicv.training import PlainView, TaskRun, error_rate, fit_task

__all__ = [
    "METHODS", "TABLE_METHODS", "Budget", "LeapMethod", "Method", "MultiCVConfig",
    "MultiCVTrainer", "PlainView", "TaskRun", "add_multicv_options", "collect_results", "error_rate", "fit_task",
    "make_method", "multicv_sweep", "multicv_table", "run_multicv", "sweep_from_args", "train_from_args",
    "write_multicv_report",
]
# The options and commands import without torch (the command line's); the protocol's
# modules are imported when one of their names is first used (leap.util.lazy).
__getattr__, __dir__ = lazy_attributes(__name__, {
    "leap.experiments.multicv.methods": ("LeapMethod", "Method", "make_method"),
    "leap.experiments.multicv.report": ("collect_results", "multicv_table", "write_multicv_report"),
    "leap.experiments.multicv.run": ("MultiCVTrainer", "multicv_sweep", "run_multicv"),
    "leap.experiments.multicv.training": ("PlainView", "TaskRun", "error_rate", "fit_task"),
})
