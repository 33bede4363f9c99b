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
   - ``hat``: :class:`leap.baselines.HATNet`, one mask and head per pretraining dataset.
   - ``progressive``: :class:`leap.baselines.ProgressiveNet`, one column per pretraining
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

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leap.baselines import HATNet, ProgressiveNet, annealed_scale
from leap.engine.loop import truncate_metrics
from leap.learners import Leap
from leap.models import ConvNet
from leap.tasks.multicv import DatasetSplits, MultiCV, display_name
from leap.util.files import (
    CorruptFileError,
    atomic_write_bytes,
    atomic_write_json,
    list_checkpoints,
    load_latest_checkpoint,
    save_checkpoint,
)
from leap.util.seeding import derive_seed, derived_generator

METHODS = ("leap", "finetune", "none", "hat", "progressive")
TABLE_METHODS = ("leap", "finetune", "progressive", "hat", "none")  # Table 1's row order
METHOD_LABELS = {"leap": "Leap", "finetune": "Finetuning", "progressive": "Progressive Nets", "hat": "HAT",
                 "none": "No pretraining"}


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

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown Multi-CV method {self.method!r}; choose from {list(METHODS)}")
        for name in ("meta_steps", "meta_batch", "task_batch", "eval_batch", "patience", "meta_patience",
                     "check_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("val_size", "sample_cap", "test_cap"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        for name in ("task_epochs", "eval_epochs", "task_lr", "meta_lr", "eval_lr"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if self.metric not in ("length", "energy"):
            raise ValueError(f"metric must be 'length' or 'energy', got {self.metric!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MultiCVConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown Multi-CV config key(s) {unknown}")
        return cls(**values)

    def benchmark(self, cache_dir: str | Path | None = None) -> MultiCV:
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


# ---------------------------------------------------------------------- training one task
class TaskView:
    """How a method trains and predicts one task: the parameters the task's optimizer
    updates, the forward pass (``step`` is None in evaluation) and optional hooks."""

    params: list[Tensor]

    def forward(self, x: Tensor, step: int | None) -> Tensor:
        raise NotImplementedError

    def penalty(self, step: int) -> Tensor | None:
        """A term added to the training loss (HAT's attention regularizer)."""
        return None

    def before_step(self, step: int) -> None:
        """After backward, before the optimizer step (HAT's gradient conditioning)."""

    def after_step(self) -> None:
        """After the optimizer step (HAT's embedding clamp)."""


class PlainView(TaskView):
    """A ConvNet whose ``head`` belongs to the task (leap, finetune, none)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.params = list(model.parameters())

    def forward(self, x: Tensor, step: int | None) -> Tensor:
        return self.model(x)


class HATView(TaskView):
    """Task ``task`` of a :class:`HATNet`; s is annealed over ``anneal_steps`` steps, then restarts
    (one epoch, as in Serra et al.)."""

    def __init__(self, net: HATNet, task: int, anneal_steps: int) -> None:
        self.net, self.task, self.anneal_steps = net, task, anneal_steps
        self.params = net.parameters_for(task)

    def scale(self, step: int) -> float:
        return annealed_scale(step % self.anneal_steps, self.anneal_steps, self.net.s_max)

    def forward(self, x: Tensor, step: int | None) -> Tensor:
        return self.net(x, self.task, None if step is None else self.scale(step))

    def penalty(self, step: int) -> Tensor:
        return self.net.regularizer(self.task, self.scale(step))

    def before_step(self, step: int) -> None:
        self.net.condition_gradients(self.task, self.scale(step))

    def after_step(self) -> None:
        self.net.after_step(self.task)


class ProgressiveView(TaskView):
    """Column ``task`` of a :class:`ProgressiveNet`; every other column is frozen."""

    def __init__(self, net: ProgressiveNet, task: int) -> None:
        self.net, self.task = net, task
        net.freeze_except(task)
        self.params = net.column_parameters(task)

    def forward(self, x: Tensor, step: int | None) -> Tensor:
        return self.net(x, self.task)


@dataclass
class TaskRun:
    """One task's training. ``train_errors`` (K,) minibatch error per step; ``best_val_error``
    the lowest validation error checked; ``stopped_early`` whether patience ran out."""

    train_errors: Tensor
    best_val_error: float
    steps: int
    max_steps: int
    stopped_early: bool


@torch.no_grad()
def error_rate(view: TaskView, data: DatasetSplits, x: Tensor, y: Tensor, chunk: int = 500) -> float:
    """Error of the view's evaluation forward pass on images ``x`` (N, C, 32, 32) uint8."""
    wrong = torch.zeros((), device=y.device)
    for start in range(0, len(y), chunk):
        logits = view.forward(data.inputs(x[start: start + chunk]), None)
        wrong += (logits.argmax(1) != y[start: start + chunk]).sum()
    return float(wrong) / max(1, len(y))


def fit_task(view: TaskView, data: DatasetSplits, budget: Budget, generator: torch.Generator, *,
             learner: Leap | None = None, model: nn.Module | None = None, restore_best: bool = True) -> TaskRun:
    """Train ``view`` on ``data`` under ``budget`` (minibatches without replacement, a new
    permutation every epoch), checking the validation error every ``check_every`` steps.

    With a ``learner`` (Leap), ``model`` is the network it follows: ``update`` after every
    backward, ``end_task`` with the loss on one more training minibatch. With
    ``restore_best``, the parameters of the best validation check are restored at the end.
    """
    n = len(data.train_y)
    max_steps = budget.max_steps(n)
    opt = torch.optim.SGD(view.params, lr=budget.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max_steps)
    order, pos = torch.randperm(n, generator=generator), 0
    errors: list[Tensor] = []
    best, bad, best_params, stopped = math.inf, 0, None, False

    def minibatch() -> tuple[Tensor, Tensor]:
        nonlocal order, pos
        if pos + budget.batch > n and pos > 0:  # epoch done: reshuffle (the tail is dropped)
            order, pos = torch.randperm(n, generator=generator), 0
        idx = order[pos: pos + budget.batch].to(data.train_y.device)
        pos += budget.batch
        return data.inputs(data.train_x[idx]), data.train_y[idx]

    step = 0
    for step in range(max_steps):
        x, y = minibatch()
        logits = view.forward(x, step)
        loss = F.cross_entropy(logits, y)
        penalty = view.penalty(step)
        opt.zero_grad(set_to_none=False)
        (loss if penalty is None else loss + penalty).backward()
        if learner is not None:
            learner.update(loss, model)
        view.before_step(step)
        opt.step()
        view.after_step()
        sched.step()
        errors.append((logits.detach().argmax(1) != y).float().mean())
        if (step + 1) % budget.check_every == 0 or step + 1 == max_steps:
            val = error_rate(view, data, data.val_x, data.val_y)
            if val < best:
                best, bad = val, 0
                if restore_best:
                    best_params = [p.detach().clone() for p in view.params]
            else:
                bad += 1
                if bad >= budget.patience:
                    stopped = True
                    break
    if learner is not None:
        x, y = minibatch()
        with torch.no_grad():
            learner.end_task(model, F.cross_entropy(view.forward(x, None), y))
    if restore_best and best_params is not None:
        with torch.no_grad():
            torch._foreach_copy_(view.params, best_params)
    return TaskRun(torch.stack(errors).cpu(), best, step + 1, max_steps, stopped)


def _with_seed(fn: Callable[[], Any], *seed_parts: object) -> Any:
    """``fn()`` with torch's global RNG seeded from ``seed_parts`` and restored afterwards:
    module initializations (encoders, heads, masks, columns) are reproducible and drawing
    them does not shift any other random stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(*seed_parts))
        return fn()


# ---------------------------------------------------------------------- the methods
class Method:
    """Pretraining on the pool and evaluation on the held-out dataset, for one method."""

    trains = True

    def __init__(self, cfg: MultiCVConfig, bench: MultiCV, pool: list[str]) -> None:
        self.cfg, self.bench, self.pool = cfg, bench, pool
        self.device = torch.device(cfg.device)
        self.task_budget = Budget(cfg.task_epochs, cfg.task_batch, cfg.task_lr, cfg.patience, cfg.check_every)
        self.eval_budget = Budget(cfg.eval_epochs, cfg.eval_batch, cfg.eval_lr, cfg.patience, cfg.check_every)

    def draw(self, step: int) -> list[tuple[int, str, torch.Generator]]:
        """Meta-step ``step``'s batch: (index, dataset, data generator), drawn with replacement."""
        pick = derived_generator(self.cfg.seed, "multicv-sources", self.cfg.held_out, step)
        chosen = torch.randint(len(self.pool), (self.cfg.meta_batch,), generator=pick).tolist()
        return [(i, self.pool[k], derived_generator(self.cfg.seed, "multicv-task", self.cfg.held_out, step, i))
                for i, k in enumerate(chosen)]

    def pretrain_step(self, step: int) -> list[tuple[str, TaskRun]]:
        raise NotImplementedError

    def evaluate(self, data: DatasetSplits, generator: torch.Generator) -> tuple[TaskRun, TaskView]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def fresh_head(self, features: int, classes: int, *purpose: object) -> nn.Linear:
        return _with_seed(lambda: nn.Linear(features, classes), self.cfg.seed, "multicv-head", self.cfg.held_out,
                          *purpose).to(self.device)

    def eval_head(self, features: int, classes: int) -> nn.Linear:
        """The held-out task's head: one seeded draw, the same for leap, finetune and none."""
        return self.fresh_head(features, classes, "eval")


class ConvNetMethod(Method):
    """Shared by leap, finetune and none: a ConvNet whose head is swapped per task."""

    def __init__(self, cfg: MultiCVConfig, bench: MultiCV, pool: list[str]) -> None:
        super().__init__(cfg, bench, pool)
        # One seeded encoder init for all three methods: paired comparisons.
        self.model = _with_seed(lambda: ConvNet(in_channels=3, num_classes=10, image_size=32),
                                cfg.seed, "multicv-init").to(self.device)
        self.features = self.model.head.in_features

    def evaluate(self, data: DatasetSplits, generator: torch.Generator) -> tuple[TaskRun, TaskView]:
        self.prepare_encoder()
        self.model.head = self.eval_head(self.features, data.num_classes)
        view = PlainView(self.model)
        return fit_task(view, data, self.eval_budget, generator), view

    def prepare_encoder(self) -> None:
        """Put the initialization to evaluate into ``self.model``'s encoder."""


class NoPretraining(ConvNetMethod):
    trains = False

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class LeapMethod(ConvNetMethod):
    """Leap on the encoder; every task gets a freshly initialized head (appendix E)."""

    def __init__(self, cfg: MultiCVConfig, bench: MultiCV, pool: list[str]) -> None:
        super().__init__(cfg, bench, pool)
        self.learner = Leap(self.model, metric=cfg.metric, params=lambda n, p: n.startswith("encoder"))
        self.meta_opt = torch.optim.Adam(self.learner.parameters(), lr=cfg.meta_lr)

    def pretrain_step(self, step: int) -> list[tuple[str, TaskRun]]:
        runs = []
        for i, name, generator in self.draw(step):
            data = self.bench.get(name)
            self.learner.init_task()
            self.learner.to(self.model)
            self.model.head = self.fresh_head(self.features, data.num_classes, "pretrain", step, i)
            runs.append((name, fit_task(PlainView(self.model), data, self.task_budget, generator,
                                        learner=self.learner, model=self.model, restore_best=False)))
        if int(self.learner.normalize().item()) > 0:
            self.meta_opt.step()
        self.meta_opt.zero_grad()
        return runs

    def prepare_encoder(self) -> None:
        self.learner.to(self.model)

    def state_dict(self) -> dict[str, Any]:
        return {"learner": self.learner.state_dict(), "meta_opt": self.meta_opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state["learner"])
        self.meta_opt.load_state_dict(state["meta_opt"])


class Finetuning(ConvNetMethod):
    """Multi-headed finetuning: the encoder carries over, one head per pretraining dataset."""

    def __init__(self, cfg: MultiCVConfig, bench: MultiCV, pool: list[str]) -> None:
        super().__init__(cfg, bench, pool)
        self.heads: dict[str, nn.Linear] = {}

    def pretrain_step(self, step: int) -> list[tuple[str, TaskRun]]:
        runs = []
        for _, name, generator in self.draw(step):
            data = self.bench.get(name)
            if name not in self.heads:
                self.heads[name] = self.fresh_head(self.features, data.num_classes, "finetune", name)
            self.model.head = self.heads[name]
            before = [p.detach().clone() for p in self.model.parameters()]
            run = fit_task(PlainView(self.model), data, self.task_budget, generator)
            if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
                # A diverged task must not poison the shared encoder: undo it.
                with torch.no_grad():
                    torch._foreach_copy_(list(self.model.parameters()), before)
            runs.append((name, run))
        return runs

    def state_dict(self) -> dict[str, Any]:
        return {"encoder": self.model.encoder.state_dict(),
                "heads": {name: head.state_dict() for name, head in self.heads.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.encoder.load_state_dict(state["encoder"])
        for name, head_state in state["heads"].items():
            classes = head_state["weight"].shape[0]
            self.heads[name] = nn.Linear(self.features, classes).to(self.device)
            self.heads[name].load_state_dict(head_state)


class HATMethod(Method):
    """HAT over the pool, one task per pretraining dataset, revisited at will."""

    def __init__(self, cfg: MultiCVConfig, bench: MultiCV, pool: list[str]) -> None:
        super().__init__(cfg, bench, pool)

        def build() -> HATNet:
            net = HATNet(in_channels=3, image_size=32)
            for name in pool:
                net.add_task(bench.get(name).num_classes)
            return net

        self.net = _with_seed(build, cfg.seed, "multicv-hat", cfg.held_out).to(self.device)

    def _view(self, task: int, data: DatasetSplits, budget: Budget) -> HATView:
        n = len(data.train_y)
        return HATView(self.net, task, min(budget.steps_per_epoch(n), budget.max_steps(n)))

    def pretrain_step(self, step: int) -> list[tuple[str, TaskRun]]:
        runs = []
        for _, name, generator in self.draw(step):
            data, task = self.bench.get(name), self.pool.index(name)
            runs.append((name, fit_task(self._view(task, data, self.task_budget), data, self.task_budget, generator)))
            self.net.mark_trained(task)
        return runs

    def evaluate(self, data: DatasetSplits, generator: torch.Generator) -> tuple[TaskRun, TaskView]:
        task = _with_seed(lambda: self.net.add_task(data.num_classes), self.cfg.seed, "multicv-hat-eval",
                          self.cfg.held_out)
        view = self._view(task, data, self.eval_budget)
        return fit_task(view, data, self.eval_budget, generator), view

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])


class ProgressiveMethod(Method):
    """Progressive Nets over the pool: one column per pretraining dataset, all laterally connected."""

    def __init__(self, cfg: MultiCVConfig, bench: MultiCV, pool: list[str]) -> None:
        super().__init__(cfg, bench, pool)
        classes = [bench.get(name).num_classes for name in pool]
        self.net = _with_seed(lambda: ProgressiveNet.fully_connected(classes, in_channels=3, image_size=32),
                              cfg.seed, "multicv-progressive", cfg.held_out).to(self.device)

    def pretrain_step(self, step: int) -> list[tuple[str, TaskRun]]:
        runs = []
        for _, name, generator in self.draw(step):
            data, task = self.bench.get(name), self.pool.index(name)
            runs.append((name, fit_task(ProgressiveView(self.net, task), data, self.task_budget, generator)))
        return runs

    def evaluate(self, data: DatasetSplits, generator: torch.Generator) -> tuple[TaskRun, TaskView]:
        task = _with_seed(lambda: self.net.add_column(data.num_classes), self.cfg.seed, "multicv-progressive-eval",
                          self.cfg.held_out)
        view = ProgressiveView(self.net, task)
        return fit_task(view, data, self.eval_budget, generator), view

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])


METHOD_CLASSES: dict[str, type[Method]] = {
    "leap": LeapMethod, "finetune": Finetuning, "none": NoPretraining, "hat": HATMethod,
    "progressive": ProgressiveMethod,
}


def make_method(cfg: MultiCVConfig, bench: MultiCV) -> Method:
    return METHOD_CLASSES[cfg.method](cfg, bench, bench.pool(cfg.held_out))


# ---------------------------------------------------------------------- a run on disk
class ConfigMismatch(ValueError):
    """The output directory holds a run with another configuration."""


def run_multicv(cfg: MultiCVConfig, out: str | Path, *, bench: MultiCV | None = None, resume: bool = True,
                overwrite: bool = False, cache_dir: str | Path | None = None,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Pretrain and evaluate one (held-out dataset, method) into ``out``.

    Files: ``config.json``; ``metrics.jsonl`` (one record per meta-step);
    ``checkpoints/`` (after every meta-step; the last one marks pretraining done);
    ``result.json`` (the evaluation). With ``resume`` a finished run is returned as is
    and an unfinished one continues from its newest checkpoint; without it, or with
    ``overwrite``, earlier files are replaced. A directory holding a run with another
    configuration is refused (:class:`ConfigMismatch`) unless ``overwrite``.
    """
    cfg.validate()
    out = Path(out)
    config_path, result_path = out / "config.json", out / "result.json"
    ckpt_dir, metrics_path = out / "checkpoints", out / "metrics.jsonl"
    if config_path.exists() and not overwrite:
        try:
            existing = json.loads(config_path.read_text())
        except (OSError, ValueError):
            existing = None
        if existing != cfg.to_dict():
            raise ConfigMismatch(f"{out} holds a different run (its config.json differs); use --overwrite")
    if resume and not overwrite and result_path.is_file():
        log(f"{out}: finished earlier, result.json kept")
        return json.loads(result_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(config_path, cfg.to_dict())
    result_path.unlink(missing_ok=True)

    bench = bench if bench is not None else cfg.benchmark(cache_dir)
    start = time.perf_counter()
    method = make_method(cfg, bench)
    state: dict[str, Any] = {"step": 0, "done": not method.trains, "best": math.inf, "bad": 0,
                             "pretrain_seconds": 0.0, "stopped_early": False}
    loaded = load_latest_checkpoint(ckpt_dir) if resume and not overwrite else None
    if loaded is not None:
        saved, path = loaded
        method.load_state_dict(saved["method"])
        state.update({k: saved[k] for k in state})
        log(f"{out}: resuming from {path.name} (meta-step {state['step']})")
    else:
        for _, old in list_checkpoints(ckpt_dir):
            old.unlink()
    truncate_metrics(metrics_path, int(state["step"]))

    with metrics_path.open("a") as metrics:
        while not state["done"]:
            t0 = time.perf_counter()
            runs = method.pretrain_step(int(state["step"]))
            state["step"] += 1
            val = [r.best_val_error for _, r in runs]
            mean_val = sum(val) / len(val)
            if mean_val < state["best"]:
                state["best"], state["bad"] = mean_val, 0
            else:
                state["bad"] += 1
            state["stopped_early"] = state["bad"] >= cfg.meta_patience
            state["done"] = state["stopped_early"] or state["step"] >= cfg.meta_steps
            seconds = time.perf_counter() - t0
            state["pretrain_seconds"] += seconds
            record = {"step": state["step"], "mean_val_error": mean_val,
                      "mean_train_error": sum(float(r.train_errors.mean()) for _, r in runs) / len(runs),
                      "tasks": [name for name, _ in runs], "task_steps": [r.steps for _, r in runs],
                      "seconds": seconds}
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()
            log(f"{cfg.held_out}/{cfg.method}: meta-step {state['step']}/{cfg.meta_steps} "
                f"val error {100 * mean_val:.1f}% ({seconds:.0f} s)")
            save_checkpoint(ckpt_dir, int(state["step"]), {**state, "method": method.state_dict()})

    data = bench.get(cfg.held_out)
    t0 = time.perf_counter()
    run, view = method.evaluate(data, derived_generator(cfg.seed, "multicv-eval", cfg.held_out))
    test_error = error_rate(view, data, data.test_x, data.test_y)
    train_error = error_rate(view, data, data.train_x, data.train_y)
    eval_seconds = time.perf_counter() - t0
    curve = run.train_errors
    notes = sorted({note for name in [cfg.held_out, *bench.pool(cfg.held_out)] for note in bench.get(name).notes})
    result = {
        "held_out": cfg.held_out, "method": cfg.method, "pool": bench.pool(cfg.held_out),
        "test_error": test_error, "train_error": train_error, "auc": float(curve.mean()),
        "best_val_error": run.best_val_error, "eval_steps": run.steps, "eval_max_steps": run.max_steps,
        "eval_stopped_early": run.stopped_early, "meta_steps": int(state["step"]),
        "meta_stopped_early": bool(state["stopped_early"]), "pretrain_seconds": float(state["pretrain_seconds"]),
        "eval_seconds": eval_seconds, "sizes": data.sizes(), "notes": notes,
        "curve": _downsample(curve, 200), "total_seconds": time.perf_counter() - start,
    }
    atomic_write_json(result_path, result)
    log(f"{cfg.held_out}/{cfg.method}: test error {100 * test_error:.1f}%, train error {100 * train_error:.1f}%, "
        f"AUC {100 * result['auc']:.1f} ({run.steps} steps)")
    return result


def _downsample(curve: Tensor, points: int) -> list[float]:
    """At most ``points`` means of consecutive blocks of the curve (for plots)."""
    if len(curve) <= points:
        return curve.tolist()
    chunks = torch.tensor_split(curve, points)
    return [float(c.mean()) for c in chunks]


# ---------------------------------------------------------------------- sweep and report
def multicv_sweep(out: str | Path, base: MultiCVConfig, held_outs: Iterable[str] | None = None,
                  methods: Iterable[str] = TABLE_METHODS, seeds: Iterable[int] | None = None, *,
                  cache_dir: str | Path | None = None, overwrite: bool = False,
                  log: Callable[[str], None] = print) -> list[Path]:
    """Every (held-out dataset, method, seed) into ``out/<held-out>/<method>/seed-<S>``,
    one dataset at a time, skipping finished runs and resuming unfinished ones; the
    report is rewritten after every run. ``held_outs`` defaults to the whole pool,
    ``seeds`` to ``base.seed``. Returns the report's paths (:func:`write_multicv_report`)."""
    out = Path(out)
    bench = base.benchmark(cache_dir)
    held_outs = list(held_outs) if held_outs is not None else list(bench.names)
    methods, seeds = list(methods), list(seeds) if seeds is not None else [base.seed]
    for name in held_outs:
        bench.pool(name)  # checks every name before any run starts
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown Multi-CV method(s) {unknown}; choose from {list(METHODS)}")
    for name in held_outs:
        for m in methods:
            for seed in seeds:
                cfg = dataclasses.replace(base, held_out=name, method=m, seed=seed)
                run_multicv(cfg, out / name / m / f"seed-{seed}", bench=bench, overwrite=overwrite, log=log)
                write_multicv_report(out)
    return write_multicv_report(out)


# Table 4 of the paper: (test %, train %, AUC) per (held-out dataset, method).
PAPER_TABLE4: dict[str, dict[str, tuple[float, float, float]]] = {
    "facescrub": {"leap": (19.9, 0.0, 11.6), "finetune": (32.7, 0.0, 13.2), "progressive": (18.0, 0.0, 8.9),
                  "hat": (25.6, 0.1, 14.6), "none": (18.2, 0.0, 10.5)},
    "notmnist": {"leap": (5.3, 0.6, 2.9), "finetune": (5.4, 2.0, 4.4), "progressive": (5.4, 3.1, 3.7),
                 "hat": (6.0, 2.8, 5.4), "none": (5.4, 2.6, 5.1)},
    "mnist": {"leap": (0.7, 0.1, 0.6), "finetune": (0.9, 0.1, 0.8), "progressive": (0.8, 0.0, 0.7),
              "hat": (0.8, 0.3, 1.2), "none": (0.9, 0.2, 1.0)},
    "fashion-mnist": {"leap": (8.0, 4.2, 6.8), "finetune": (8.9, 3.8, 7.0), "progressive": (8.7, 5.4, 9.2),
                      "hat": (9.5, 5.5, 8.1), "none": (8.4, 4.7, 7.8)},
    "cifar10": {"leap": (21.2, 10.8, 17.5), "finetune": (27.4, 13.3, 20.7), "progressive": (24.2, 15.2, 24.0),
                "hat": (27.7, 21.2, 27.3), "none": (26.2, 13.1, 23.0)},
    "svhn": {"leap": (8.4, 5.6, 7.5), "finetune": (10.9, 6.1, 10.5), "progressive": (10.1, 6.3, 13.8),
             "hat": (10.5, 5.7, 8.5), "none": (10.3, 6.9, 11.5)},
    "cifar100": {"leap": (52.0, 30.5, 43.4), "finetune": (59.2, 31.5, 44.1), "progressive": (55.7, 42.1, 54.6),
                 "hat": (62.0, 49.8, 58.4), "none": (54.8, 33.1, 50.1)},
    "gtsrb": {"leap": (2.9, 0.0, 1.2), "finetune": (5.7, 0.0, 1.7), "progressive": (3.6, 0.0, 4.0),
              "hat": (5.4, 0.0, 2.3), "none": (3.6, 0.0, 2.4)},
}


def collect_results(directory: str | Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(config, result) of every finished run under ``directory`` (any depth)."""
    found = []
    for result_path in sorted(Path(directory).rglob("result.json")):
        config_path = result_path.parent / "config.json"
        try:
            result = json.loads(result_path.read_text())
            config = json.loads(config_path.read_text())
        except (OSError, ValueError):
            continue
        if {"held_out", "method", "test_error"} <= set(result):
            found.append((config, result))
    return found


def multicv_table(entries: list[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    """Table 1's shape (held-out dataset x method; Test, Train, AUC), ours beside Table 4.
    Several seeds of one cell are averaged (mean ± standard deviation, n)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _, r in entries:
        groups.setdefault((r["held_out"], r["method"]), []).append(r)
    paper_order = list(PAPER_TABLE4)
    keys = sorted(groups, key=lambda k: (paper_order.index(k[0]) if k[0] in paper_order else len(paper_order),
                                         k[0], TABLE_METHODS.index(k[1]) if k[1] in TABLE_METHODS else 99))
    lines = ["| Held-out task | Method | Test (%) | Train (%) | AUC | Paper Test (%) | Paper Train (%) | Paper AUC |",
             "|---|---|---|---|---|---|---|---|"]
    previous = None
    for held_out, method in keys:
        runs = groups[(held_out, method)]
        cells = [_mean_cell([100 * r[k] for r in runs]) for k in ("test_error", "train_error", "auc")]
        paper = PAPER_TABLE4.get(held_out, {}).get(method)
        paper_cells = [f"{v:.1f}" for v in paper] if paper else ["-", "-", "-"]
        task = display_name(held_out) if held_out != previous else ""
        previous = held_out
        lines.append(f"| {task} | {METHOD_LABELS.get(method, method)} | " + " | ".join(cells + paper_cells) + " |")
    return "\n".join(lines) + "\n"


def _mean_cell(values: list[float]) -> str:
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.1f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return f"{mean:.1f} ± {std:.1f} (n={len(values)})"


def write_multicv_report(directory: str | Path) -> list[Path]:
    """Write ``multicv.md`` (Table 1-shaped, ours beside the paper's Table 4, with the
    protocol and the notes on splits) and ``multicv.json`` into ``directory``; returns
    their paths (an empty list when no run has finished)."""
    directory = Path(directory)
    entries = collect_results(directory)
    if not entries:
        return []
    budget_keys = ("meta_steps", "meta_batch", "task_epochs", "task_batch", "task_lr", "meta_lr", "eval_epochs",
                   "eval_batch", "eval_lr", "patience", "meta_patience", "check_every", "val_size", "sample_cap",
                   "test_cap", "metric", "seed")
    protocols = {json.dumps({k: c.get(k) for k in budget_keys}, sort_keys=True) for c, _ in entries}
    notes = sorted({n for _, r in entries for n in r.get("notes", [])})
    text = ["# Multi-CV results\n",
            "Rows: held-out dataset x method (Table 1's shape); Test and Train are error rates (%), AUC is the "
            "area under the training-error curve on the held-out dataset scaled to 0-100 (100 x mean minibatch "
            "training error over the steps taken). Paper columns: Table 4 of Flennerhag et al. (2019).\n",
            multicv_table(entries), "\n## Protocol\n"]
    text += [f"- `{p}`" for p in sorted(protocols)]
    if len(protocols) > 1:
        text.append("\n**Warning: the runs above used different protocols.**")
    text += ["", "## Data notes", ""] + ([f"- {n}" for n in notes] or ["- none"])
    text += ["", "## Runs", "", "| Held-out | Method | Meta-steps | Eval steps | Pretrain (s) | Eval (s) |",
             "|---|---|---|---|---|---|"]
    for _, r in sorted(entries, key=lambda e: (e[1]["held_out"], e[1]["method"])):
        text.append(f"| {r['held_out']} | {r['method']} | {r['meta_steps']} | {r['eval_steps']}/{r['eval_max_steps']} "
                    f"| {r['pretrain_seconds']:.0f} | {r['eval_seconds']:.0f} |")
    md, js = directory / "multicv.md", directory / "multicv.json"
    atomic_write_bytes(md, ("\n".join(text) + "\n").encode())
    atomic_write_json(js, [{**{k: v for k, v in r.items() if k != "curve"}, "config": c} for c, r in entries])
    return [md, js]


# ---------------------------------------------------------------------- command line
def add_multicv_options(p: argparse.ArgumentParser) -> None:
    """Options of ``leap train --benchmark multicv`` that the generic benchmarks lack."""
    g = p.add_argument_group("Multi-CV (--benchmark multicv)")
    g.add_argument("--held-out", help="the dataset to evaluate on, pretraining on the others (sweep: a "
                   "comma-separated list, default all)")
    g.add_argument("--datasets", help="comma-separated pool (default: every dataset in --data-dir)")
    g.add_argument("--max-epochs", type=float, help="epochs per pretraining task (default 1)")
    g.add_argument("--eval-epochs", type=float, help="epochs on the held-out dataset (default 100)")
    g.add_argument("--sample-cap", type=int, help="cap on each dataset's training images")
    g.add_argument("--test-cap", type=int, help="cap on each dataset's test images")
    g.add_argument("--val-size", type=int, help="validation images per dataset (default 10%% of training)")
    g.add_argument("--patience", type=int, help="validation checks without improvement that stop a task (10)")
    g.add_argument("--meta-patience", type=int, help="meta-steps without improvement that stop pretraining (10)")
    g.add_argument("--check-every", type=int, help="task steps between validation checks (1)")
    g.add_argument("--cache-dir", help="where decoded datasets are cached")


def config_from_args(args: argparse.Namespace, held_out: str | None = None, method: str | None = None,
                     seed: int | None = None) -> MultiCVConfig:
    """A run's config from ``leap train``/``leap sweep`` arguments (None = Table 5's value)."""
    mapping = {"meta_steps": "meta_steps", "meta_batch": "meta_batch", "task_batch": "task_batch",
               "task_lr": "inner_lr", "meta_lr": "meta_lr", "eval_batch": "eval_batch", "eval_lr": "eval_lr",
               "task_epochs": "max_epochs", "eval_epochs": "eval_epochs", "sample_cap": "sample_cap",
               "test_cap": "test_cap", "val_size": "val_size", "patience": "patience",
               "meta_patience": "meta_patience", "check_every": "check_every", "metric": "metric"}
    values = {field: getattr(args, arg) for field, arg in mapping.items() if getattr(args, arg, None) is not None}
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()] if args.datasets else None
    cfg = MultiCVConfig(held_out=held_out or args.held_out or "", method=method or args.method, datasets=datasets,
                        data_dir=args.data_dir, seed=seed if seed is not None else getattr(args, "seed", 0),
                        device=args.device, **values)
    cfg.validate()
    return cfg


def _log_to_stderr(args: argparse.Namespace) -> Callable[[str], None]:
    def log(msg: str) -> None:
        if not args.no_progress:
            print(f"leap: {msg}", file=sys.stderr)
    return log


INPUT_ERRORS = (ValueError, FileNotFoundError, CorruptFileError, ImportError)


def train_from_args(args: argparse.Namespace) -> int:
    """``leap train --benchmark multicv``: one run into ``--out`` (resumed if it exists
    with the same config). Errors in the input or the data exit with status 2."""
    try:
        if not args.held_out:
            raise ValueError("--benchmark multicv needs --held-out NAME (a dataset of the pool)")
        cfg = config_from_args(args)
        result = run_multicv(cfg, args.out, resume=True, overwrite=args.overwrite, cache_dir=args.cache_dir,
                             log=_log_to_stderr(args))
    except INPUT_ERRORS as err:
        print(f"leap: error: {err}", file=sys.stderr)
        return 2
    print(f"{cfg.held_out}/{cfg.method}: test error {100 * result['test_error']:.1f}%, "
          f"train error {100 * result['train_error']:.1f}%, AUC {100 * result['auc']:.1f}")
    return 0


def sweep_from_args(args: argparse.Namespace) -> int:
    """``leap sweep --benchmark multicv``: held-out datasets (``--held-out A,B``; default
    all) x methods (``--methods``; default all five) x seeds (``--seeds``; default 0)."""
    try:
        methods = [m.strip() for m in (args.methods or ",".join(TABLE_METHODS)).split(",") if m.strip()]
        seeds = [int(v) for v in (args.seeds or "0").split(",") if v.strip()]
        held = [h.strip() for h in args.held_out.split(",") if h.strip()] if args.held_out else None
        base = config_from_args(args, held_out=(held or ["-"])[0], method=methods[0] if methods else "leap",
                                seed=seeds[0] if seeds else 0)
        paths = multicv_sweep(args.out, base, held, methods, seeds, cache_dir=args.cache_dir,
                              overwrite=args.overwrite, log=_log_to_stderr(args))
    except INPUT_ERRORS as err:
        print(f"leap: error: {err}", file=sys.stderr)
        return 2
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


__all__ = [
    "METHODS", "TABLE_METHODS", "Budget", "MultiCVConfig", "TaskRun", "add_multicv_options", "fit_task",
    "multicv_sweep", "run_multicv", "sweep_from_args", "train_from_args", "write_multicv_report",
]
