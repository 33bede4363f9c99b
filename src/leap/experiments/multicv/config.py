"""Multi-CV's configuration (Table 5's budgets) and a task's training budget.

Imports no torch (the command line's Multi-CV options are declared here); the datasets
are imported when a run builds them
(`MultiCVConfig.benchmark()`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leap.experiments.config import RUN_FIELDS, check_meta_lr_changes, meta_lr_at
from leap.util import checks
from leap.util.options import Option, by_name, check_fields, comma_list

if TYPE_CHECKING:
    from leap.tasks.multicv import MultiCV

METHODS = ("leap", "finetune", "none", "hat", "progressive")
TABLE_METHODS = ("leap", "finetune", "progressive", "hat", "none")  # Table 1's row order
METHOD_LABELS = {"leap": "Leap", "finetune": "Finetuning", "progressive": "Progressive Nets", "hat": "HAT",
                 "none": "No pretraining"}


# ---------------------------------------------------------------------- options
#: Multi-CV's own options, declared once (flag, type, range, help); each applies to
#: ``--benchmark multicv`` only. Table 5's defaults live in
# [`MultiCVConfig`][leap.experiments.multicv.config.MultiCVConfig].
MULTICV_OPTIONS = tuple(Option(*args, applies_to=("multicv",), **kwargs) for args, kwargs in (
    (("held_out", "the dataset to evaluate on, pretraining on the others (sweep: a comma-separated list, "
      "default all)", comma_list()), {}),
    (("datasets", "comma-separated pool (default: every dataset in --data-dir)", comma_list()), {}),
    (("max_epochs", "epochs per pretraining task (default 1)", float), dict(above=0)),
    (("eval_epochs", "epochs on the held-out dataset (default 100)", float), dict(above=0)),
    (("sample_cap", "cap on each dataset's training images", int), dict(low=1, optional=True)),
    (("test_cap", "cap on each dataset's test images", int), dict(low=1, optional=True)),
    (("val_size", "validation images per dataset (default 10%% of training)", int), dict(low=1, optional=True)),
    (("patience", "validation checks without improvement that stop a task (10)", int), dict(low=1)),
    (("meta_patience", "meta-steps without improvement that stop pretraining (10)", int), dict(low=1)),
    (("check_every", "task steps between validation checks (1)", int), dict(low=1)),
    (("cache_dir", "where decoded datasets are cached"), dict(optional=True)),
))

#: Each MultiCVConfig field set from the command line, and the option that declares it
#: (the generic ones are ``leap train``'s, read with Table 5's defaults).
FIELD_OPTIONS = {
    "meta_steps": "meta_steps", "meta_batch": "meta_batch", "task_batch": "task_batch", "task_lr": "inner_lr",
    "meta_lr": "meta_lr", "eval_batch": "eval_batch", "eval_lr": "eval_lr", "metric": "metric",
    "task_epochs": "max_epochs", "eval_epochs": "eval_epochs", "sample_cap": "sample_cap", "test_cap": "test_cap",
    "val_size": "val_size", "patience": "patience", "meta_patience": "meta_patience", "check_every": "check_every",
}
OPTIONS = {**RUN_FIELDS, **by_name(MULTICV_OPTIONS)}


# ---------------------------------------------------------------------- configuration
@dataclass
class MultiCVConfig:
    """One Multi-CV run (one held-out dataset, one method). Defaults: Table 5."""

    held_out: str
    method: str = "leap"
    datasets: list[str] | None = None  # the pool; None = what the data directory holds
    data_dir: str | None = None
    seed: int = 0
    meta_steps: int = 1000
    meta_batch: int = 10
    task_epochs: float = 1.0  # per pretraining task
    task_batch: int = 32
    task_lr: float = 0.1
    meta_lr: float = 0.01  # Leap's Adam
    eval_epochs: float = 100.0
    eval_batch: int = 32
    eval_lr: float = 0.1
    patience: int = 10  # validation checks without improvement that stop a task
    meta_patience: int = 10  # meta-steps without improvement that stop pretraining
    check_every: int = 1  # task steps between validation checks
    val_size: int | None = None  # None: 10% of each training split
    sample_cap: int | None = None  # cap on each dataset's training images
    test_cap: int | None = None
    metric: str = "energy"
    device: str = "cpu"
    # [from_step, lr] pairs: the meta learning rate from that meta-step (0-based) on, recorded
    # when a run is continued with another --meta-lr (e.g. after its θ0 diverged).
    meta_lr_changes: list[list[float]] = dataclasses.field(default_factory=list)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown Multi-CV method {self.method!r}; choose from {list(METHODS)}")
        check_fields(self, OPTIONS, FIELD_OPTIONS)
        OPTIONS["seed"].check(self.seed)
        check_meta_lr_changes(self.meta_lr_changes, OPTIONS["meta_lr"])

    def meta_lr_at(self, step: int) -> float:
        """Leap's meta learning rate at meta-step ``step`` (0-based): ``meta_lr`` changed by
        ``meta_lr_changes``."""
        return meta_lr_at(self.meta_lr, self.meta_lr_changes, step)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        if not values["meta_lr_changes"]:
            del values["meta_lr_changes"]  # a run never continued: its config.json as before the option
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MultiCVConfig:
        return checks.dataclass_from_dict(cls, values, "Multi-CV config")

    def benchmark(self, cache_dir: str | Path | None = None) -> MultiCV:
        from leap.tasks.multicv import MultiCV

        return MultiCV(self.data_dir, self.datasets, cache_dir=cache_dir, val_size=self.val_size,
                       sample_cap=self.sample_cap, test_cap=self.test_cap, device=self.device)


@dataclass(frozen=True)
class Budget:
    """One task's training: at most ``epochs`` epochs of ``batch``-sized steps, SGD at
    ``lr`` with cosine annealing to 0 over that budget, early stopping as configured."""

    epochs: float
    batch: int
    lr: float
    patience: int
    check_every: int

    def steps_per_epoch(self, n: int) -> int:
        return max(1, n // self.batch)

    def max_steps(self, n: int) -> int:
        return max(1, round(self.epochs * self.steps_per_epoch(n)))
