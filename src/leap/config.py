"""Run configuration: every hyperparameter of a meta-training run in one place.

Defaults follow the paper's Table 3 (Omniglot) where a benchmark reproduces it; the
built-in benchmark scales budgets down so that a comparison runs in minutes on 2 cores.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from leap.rl.options import GENERIC_DEFAULTS as RL_DEFAULTS
from leap.rl.options import RL_BENCHMARKS, pretrain_default, resolve_extra
from leap.tasks.omniglot import BN_EVAL, PIPELINES

METHODS = ("leap", "reptile", "fomaml", "maml", "finetune", "none")

# Meta learning rates of Table 3 (the built-in benchmark uses the same ones).
META_LR = {"leap": 0.1, "reptile": 0.1, "fomaml": 0.5, "maml": 0.5, "finetune": 0.0, "none": 0.0}

BENCHMARK_DEFAULTS: dict[str, dict[str, Any]] = {
    "builtin": dict(
        meta_steps=100, meta_batch=5, task_steps=50, task_batch=20, inner_lr=0.1,
        maml_steps=5, pretrain_tasks=20, eval_steps=50, eval_batch=20, eval_lr=0.1, val_every=0,
    ),
    "omniglot": dict(
        meta_steps=1000, meta_batch=20, task_steps=100, task_batch=20, inner_lr=0.1,
        maml_steps=5, pretrain_tasks=25, eval_steps=100, eval_batch=20, eval_lr=0.1, val_every=100,
    ),
    # Reinforcement learning (section 4.3): see leap.rl.options for how the fields read there.
    **RL_DEFAULTS,
}


#: Omniglot's protocol options, their choices and defaults (the authors' code).
OMNIGLOT_PROTOCOL = {"pipeline": "released", "bn_eval": "running"}
OMNIGLOT_CHOICES = {"pipeline": PIPELINES, "bn_eval": BN_EVAL}


@dataclass
class RunConfig:
    """One meta-training run. ``None`` fields take the benchmark's defaults."""

    method: str = "leap"
    benchmark: str = "builtin"
    seed: int = 0
    meta_steps: int | None = None
    meta_batch: int | None = None
    task_steps: int | None = None
    task_batch: int | None = None
    inner_lr: float | None = None
    inner_optimizer: str | None = None  # None: the benchmark's (RL: rmsprop), else sgd
    meta_lr: float | None = None
    meta_optimizer: str = "sgd"
    maml_steps: int | None = None
    pretrain_tasks: int | None = None
    eval_steps: int | None = None
    eval_batch: int | None = None
    eval_lr: float | None = None
    val_every: int | None = None
    # Leap's options (section 2.3): length metric, loss in the manifold, stabilizer.
    metric: str | None = None  # None: the benchmark's (RL: energy, section 4.3), else length
    loss_in_manifold: bool = True
    stabilizer: bool = True
    # Omniglot's protocol details (leap.tasks.omniglot): the image pipeline, and whether
    # test images are classified with running (default) or test-batch statistics.
    pipeline: str | None = None
    bn_eval: str | None = None
    device: str = "cpu"
    data_dir: str | None = None
    # How tasks are trained (leap.engine.batched): "auto" is batched on CUDA, sequential
    # on CPU; compile None = on for CUDA; chunk None = the whole meta-batch at once.
    engine: str = "auto"
    compile: bool | None = None
    max_tasks_per_chunk: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> RunConfig:
        """A copy with the benchmark's defaults filled in and every value checked."""
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {list(METHODS)}")
        if self.benchmark not in BENCHMARK_DEFAULTS:
            raise ValueError(f"unknown benchmark {self.benchmark!r}; choose from {sorted(BENCHMARK_DEFAULTS)}")
        values = dataclasses.asdict(self)
        if self.benchmark in RL_BENCHMARKS and values["pretrain_tasks"] is None:
            values["pretrain_tasks"] = pretrain_default(self.benchmark, self.extra)
        for key, default in BENCHMARK_DEFAULTS[self.benchmark].items():
            if values[key] is None:
                values[key] = default
        for name, default in OMNIGLOT_PROTOCOL.items():
            if self.benchmark == "omniglot":
                values[name] = values[name] or default
            elif values[name] is not None:
                raise ValueError(f"{name} applies to the omniglot benchmark only, not {self.benchmark!r}")
        values["inner_optimizer"] = values["inner_optimizer"] or "sgd"
        values["metric"] = values["metric"] or "length"
        if values["meta_lr"] is None:
            values["meta_lr"] = META_LR[self.method]
        cfg = RunConfig(**values)
        cfg.validate()
        if cfg.benchmark in RL_BENCHMARKS:
            cfg.extra = resolve_extra(cfg.benchmark, cfg.method, cfg.extra, cfg.to_dict())
        return cfg

    def validate(self) -> None:
        for name in ("meta_steps", "meta_batch", "task_steps", "task_batch", "maml_steps", "pretrain_tasks",
                     "eval_steps", "eval_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.val_every, int) or self.val_every < 0:
            raise ValueError(f"val_every must be a non-negative integer, got {self.val_every!r}")
        for name in ("inner_lr", "eval_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.method not in ("finetune", "none") and not self.meta_lr > 0:
            raise ValueError(f"meta_lr must be > 0, got {self.meta_lr!r}")
        if self.metric not in ("length", "energy"):
            raise ValueError(f"metric must be 'length' or 'energy', got {self.metric!r}")
        if self.meta_optimizer not in ("sgd", "adam"):
            raise ValueError(f"meta_optimizer must be 'sgd' or 'adam', got {self.meta_optimizer!r}")
        if self.inner_optimizer not in ("sgd", "adam", "rmsprop"):
            raise ValueError(f"inner_optimizer must be 'sgd', 'adam' or 'rmsprop', got {self.inner_optimizer!r}")
        if self.benchmark == "omniglot":
            for name, choices in OMNIGLOT_CHOICES.items():
                if getattr(self, name) not in choices:
                    raise ValueError(f"{name} must be one of {list(choices)}, got {getattr(self, name)!r}")
        if self.engine not in ("auto", "batched", "sequential"):
            raise ValueError(f"engine must be 'auto', 'batched' or 'sequential', got {self.engine!r}")
        if self.compile not in (None, True, False):
            raise ValueError(f"compile must be true, false or unset, got {self.compile!r}")
        chunk = self.max_tasks_per_chunk
        if chunk is not None and (not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1):
            raise ValueError(f"max_tasks_per_chunk must be a positive integer, got {chunk!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}")
        return cls(**values)
