"""Training one task to convergence with early stopping (appendix E), for every method."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leap.baselines import HATNet, ProgressiveNet, annealed_scale
from leap.experiments.multicv.config import Budget
from leap.learners import Leap
from leap.tasks.multicv import DatasetSplits
from leap.util.seeding import derive_seed


# ---------------------------------------------------------------------- training one task
class TaskView:
    """How a method trains and predicts one task: the parameters the task's optimizer
    updates, the forward pass (``step`` is None in evaluation) and optional hooks.
    ``network`` is the whole module the predictions come from (every column, mask and head
    of it), whose size Table 1's discussion compares."""

    params: list[Tensor]
    network: nn.Module

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
        self.model = self.network = model
        self.params = list(model.parameters())

    def forward(self, x: Tensor, step: int | None) -> Tensor:
        return self.model(x)


class HATView(TaskView):
    """Task ``task`` of a `HATNet`; s is annealed over ``anneal_steps`` steps, then restarts
    (one epoch, as in Serra et al.)."""

    def __init__(self, net: HATNet, task: int, anneal_steps: int) -> None:
        self.net, self.task, self.anneal_steps = net, task, anneal_steps
        self.network = net
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
    """Column ``task`` of a `ProgressiveNet`; every other column is frozen."""

    def __init__(self, net: ProgressiveNet, task: int) -> None:
        self.net, self.task = net, task
        self.network = net
        net.freeze_except(task)
        self.params = net.column_parameters(task)

    def forward(self, x: Tensor, step: int | None) -> Tensor:
        return self.net(x, self.task)


@dataclass
class TaskRun:
    """One task's training. ``train_errors`` (K,) minibatch error per step; ``best_val_error``
    the lowest validation error checked; ``stopped_early`` whether patience ran out;
    ``path`` Leap's meta-objective for the task (its path's length or energy, eq. 5; NaN
    for the other methods)."""

    train_errors: Tensor
    best_val_error: float
    steps: int
    max_steps: int
    stopped_early: bool
    path: float = math.nan


#: Seed of the order in which `error_rate` forms its chunks (the same for every run).
EVAL_ORDER_SEED = 20190506


@torch.no_grad()
def error_rate(view: TaskView, data: DatasetSplits, x: Tensor, y: Tensor, chunk: int = 500) -> float:
    """Error of the view's evaluation forward pass on images ``x`` (N, C, 32, 32) uint8.

    The networks keep no running statistics, so batch norm normalizes each chunk of images
    with that chunk's own statistics. The chunks are therefore taken in a fixed random order
    of the images, not in the order of ``x``: the splits are stored sorted by class, and a
    chunk of one or two classes would be normalized by those classes' statistics alone
    (measured on CIFAR-10 from a random init, trained 3,600 steps: in storage order,
    training error 64.8% with one class per chunk, test 44.0% with 2-3 classes, validation
    29.9% with 5)."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(EVAL_ORDER_SEED)).to(y.device)
    wrong = torch.zeros((), device=y.device)
    # equal chunks (sizes differ by at most one), so that no chunk's statistics come from a few images
    for idx in torch.tensor_split(order, max(1, math.ceil(len(y) / chunk))):
        logits = view.forward(data.inputs(x[idx]), None)
        wrong += (logits.argmax(1) != y[idx]).sum()
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


def with_seed(fn: Callable[[], Any], *seed_parts: object) -> Any:
    """``fn()`` with torch's global RNG seeded from ``seed_parts`` and restored afterwards:
    module initializations (encoders, heads, masks, columns) are reproducible and drawing
    them does not shift any other random stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(*seed_parts))
        return fn()
