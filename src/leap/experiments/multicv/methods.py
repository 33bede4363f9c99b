"""The methods of Table 1: pretraining on the pool and evaluation on the held-out dataset."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from leap.baselines import HATNet, ProgressiveNet
from leap.engine.loop import StepInterrupted
from leap.engine.meta_update import normalize_meta_gradient
from leap.experiments.multicv.config import Budget, MultiCVConfig
from leap.experiments.multicv.training import (
    HATView,
    PlainView,
    ProgressiveView,
    TaskRun,
    TaskView,
    fit_task,
    with_seed,
)
from leap.learners import Leap
from leap.models import ConvNet
from leap.tasks.multicv import DatasetSplits, MultiCV
from leap.util import distributed
from leap.util.seeding import derived_generator


# ---------------------------------------------------------------------- the methods
class Method:
    """Pretraining on the pool and evaluation on the held-out dataset, for one method."""

    trains = True
    #: Leap's hook and the optimizer of its θ0 (None: the other methods train the model itself).
    learner: Leap | None = None
    meta_opt: torch.optim.Optimizer | None = None

    def __init__(self, cfg: MultiCVConfig, bench: MultiCV, pool: list[str]) -> None:
        self.cfg, self.bench, self.pool = cfg, bench, pool
        self.device = torch.device(cfg.device)
        self.task_budget = Budget(cfg.task_epochs, cfg.task_batch, cfg.task_lr, cfg.patience, cfg.check_every)
        self.eval_budget = Budget(cfg.eval_epochs, cfg.eval_batch, cfg.eval_lr, cfg.patience, cfg.check_every)
        # The tasks of the meta-step in flight this process already trained: (position, dataset, run).
        self.partial: list[tuple[int, str, TaskRun]] = []

    def draw(self, step: int) -> list[tuple[int, str, torch.Generator]]:
        """Meta-step ``step``'s batch: (index, dataset, data generator), drawn with replacement."""
        pick = derived_generator(self.cfg.seed, "multicv-sources", self.cfg.held_out, step)
        chosen = torch.randint(len(self.pool), (self.cfg.meta_batch,), generator=pick).tolist()
        return [(i, self.pool[k], derived_generator(self.cfg.seed, "multicv-task", self.cfg.held_out, step, i))
                for i, k in enumerate(chosen)]

    def pretrain_step(self, step: int, stop: Callable[[], bool] = lambda: False) -> list[tuple[int, str, TaskRun]]:
        """Meta-step ``step``'s task work: train each task of its batch (`train_task()`)
        that falls to this process (under torchrun a contiguous share, alone all), as
        (position in the batch, dataset, run); `end_step()` follows. A task trains to
        convergence (minutes), so when ``stop()`` turns true between two tasks of a single
        process this raises [`StepInterrupted`][leap.engine.loop.StepInterrupted]; ``self.partial`` (in the
        trainer's checkpoint) then holds the tasks done, and a resumed meta-step continues
        with the next one. Under torchrun the ranks stop after the meta-step instead."""
        batch = self.draw(step)
        done = {i for i, _, _ in self.partial}
        for i, name, generator in distributed.shard(batch):
            if i in done:
                continue
            if stop() and not distributed.active():
                raise StepInterrupted(f"after task {len(self.partial)} of {len(batch)}")
            self.partial.append((i, name, self.train_task(step, i, name, generator)))
        runs, self.partial = self.partial, []
        return runs

    def train_task(self, step: int, index: int, name: str, generator: torch.Generator) -> TaskRun:
        raise NotImplementedError

    def end_step(self, riders: Sequence[Tensor]) -> int:
        """What a meta-step does after its tasks; returns the tasks in the meta-gradient.
        Leap normalizes the meta-gradient (``fit`` applies it), summing it over torchrun's
        ranks in one all-reduce that also sums ``riders`` (the tasks' metrics, the stop
        flags); the other methods have no meta-gradient and run in one process (0)."""
        return 0

    def evaluate(self, data: DatasetSplits, generator: torch.Generator) -> tuple[TaskRun, TaskView]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def fresh_head(self, features: int, classes: int, *purpose: object) -> nn.Linear:
        return with_seed(lambda: nn.Linear(features, classes), self.cfg.seed, "multicv-head", self.cfg.held_out,
                          *purpose).to(self.device)

    def eval_head(self, features: int, classes: int) -> nn.Linear:
        """The held-out task's head: one seeded draw, the same for leap, finetune and none."""
        return self.fresh_head(features, classes, "eval")


class ConvNetMethod(Method):
    """Shared by leap, finetune and none: a ConvNet whose head is swapped per task."""

    def __init__(self, cfg: MultiCVConfig, bench: MultiCV, pool: list[str]) -> None:
        super().__init__(cfg, bench, pool)
        # One seeded encoder init for all three methods: paired comparisons.
        self.model = with_seed(lambda: ConvNet(in_channels=3, num_classes=10, image_size=32),
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
        self.learner: Leap = Leap(self.model, metric=cfg.metric, params=lambda n, p: n.startswith("encoder"))
        self.meta_opt: torch.optim.Optimizer = torch.optim.Adam(self.learner.parameters(), lr=cfg.meta_lr)

    def train_task(self, step: int, index: int, name: str, generator: torch.Generator) -> TaskRun:
        data = self.bench.get(name)
        self.learner.init_task()
        self.learner.to(self.model)
        self.model.head = self.fresh_head(self.features, data.num_classes, "pretrain", step, index)
        run = fit_task(PlainView(self.model), data, self.task_budget, generator, learner=self.learner,
                       model=self.model, restore_best=False)
        run.path = self.learner.last_path
        return run

    def end_step(self, riders: Sequence[Tensor]) -> int:
        # The meta-update itself is fit's (leap.engine.loop.meta_step), on ``meta_opt``.
        return normalize_meta_gradient(self.learner, riders)

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

    def train_task(self, step: int, index: int, name: str, generator: torch.Generator) -> TaskRun:
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
        return run

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

        self.net = with_seed(build, cfg.seed, "multicv-hat", cfg.held_out).to(self.device)

    def _view(self, task: int, data: DatasetSplits, budget: Budget) -> HATView:
        n = len(data.train_y)
        return HATView(self.net, task, min(budget.steps_per_epoch(n), budget.max_steps(n)))

    def train_task(self, step: int, index: int, name: str, generator: torch.Generator) -> TaskRun:
        data, task = self.bench.get(name), self.pool.index(name)
        run = fit_task(self._view(task, data, self.task_budget), data, self.task_budget, generator)
        self.net.mark_trained(task)
        return run

    def evaluate(self, data: DatasetSplits, generator: torch.Generator) -> tuple[TaskRun, TaskView]:
        task = with_seed(lambda: self.net.add_task(data.num_classes), self.cfg.seed, "multicv-hat-eval",
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
        self.net = with_seed(lambda: ProgressiveNet.fully_connected(classes, in_channels=3, image_size=32),
                              cfg.seed, "multicv-progressive", cfg.held_out).to(self.device)

    def train_task(self, step: int, index: int, name: str, generator: torch.Generator) -> TaskRun:
        data, task = self.bench.get(name), self.pool.index(name)
        return fit_task(ProgressiveView(self.net, task), data, self.task_budget, generator)

    def evaluate(self, data: DatasetSplits, generator: torch.Generator) -> tuple[TaskRun, TaskView]:
        task = with_seed(lambda: self.net.add_column(data.num_classes), self.cfg.seed, "multicv-progressive-eval",
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
