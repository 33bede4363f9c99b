"""Evaluation of an initialization: train every held-out task from it (Table 2's protocol).

One helper for every few-shot method and for validation during meta-training.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from leap.engine.batched import select_engine
from leap.engine.inner import InnerLoop, TaskCurve, train_task
from leap.models import reset_head, reset_running_stats
from leap.tasks.base import Benchmark, example_input
from leap.util import distributed
from leap.util.seeding import derived_generator


@dataclass
class EvalResult:
    """Evaluation of an init on held-out tasks: per-task test errors and AUCs, and the
    mean training-error curve (K,); the same of the loss (test loss, the training loss's
    AUC, its mean curve), which a language model is judged by."""

    test_errors: list[float]
    aucs: list[float]
    curve: list[float]
    test_losses: list[float] = field(default_factory=list)
    loss_aucs: list[float] = field(default_factory=list)
    loss_curve: list[float] = field(default_factory=list)

    @property
    def test_error(self) -> float:
        return sum(self.test_errors) / len(self.test_errors)

    @property
    def test_error_std(self) -> float:
        m = self.test_error
        return math.sqrt(sum((e - m) ** 2 for e in self.test_errors) / len(self.test_errors))

    @property
    def auc(self) -> float:
        return sum(self.aucs) / len(self.aucs)

    def to_dict(self) -> dict[str, Any]:
        losses = {}
        if self.test_losses:
            losses = {"test_loss": sum(self.test_losses) / len(self.test_losses),
                      "loss_auc": sum(self.loss_aucs) / len(self.loss_aucs), "test_losses": self.test_losses,
                      "loss_aucs": self.loss_aucs, "loss_curve": self.loss_curve}
        return {
            "test_error": self.test_error, "test_error_std": self.test_error_std, "auc": self.auc,
            "test_errors": self.test_errors, "aucs": self.aucs, "curve": self.curve, **losses,
        }


def evaluate(
    benchmark: Benchmark,
    init: dict[str, Tensor],
    loop: InnerLoop,
    seed: int,
    split: str = "test",
    fresh_heads: bool = False,
    max_tasks: int | None = None,
    engine: str = "auto",
    compile: bool | None = None,
    max_tasks_per_chunk: int | None = None,
    on_tasks: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Train every task of ``split`` for ``loop.steps`` steps from ``init``.

    The tasks, minibatches and fresh heads depend on ``seed`` only, so two inits
    evaluated with one seed see exactly the same data (a paired comparison). AUC is the
    area under the training-error curve normalized by the number of steps (mean error).

    Under torchrun every rank must call this: each trains a contiguous share of the
    tasks and all ranks return the same, complete result.

    ``engine``, ``compile`` and ``max_tasks_per_chunk`` choose how the tasks are trained
    ([`leap.engine.batched.select_engine()`][leap.engine.batched.select_engine]); the result is the same up to rounding.
    ``on_tasks(done, total)`` is called as this process's tasks finish (progress).
    """
    model = benchmark.make_model()
    n = benchmark.num_sources(split)
    if max_tasks is not None:
        n = min(n, max_tasks)
    # Row per task: test error, test loss, the training-error curve (K,), the training-loss
    # curve (K,). Other ranks' rows stay zero here; summing over ranks (x + 0 is exact) gives
    # every rank the whole table.
    k = loop.steps
    table = torch.zeros(n, 2 + 2 * k, device=next(model.parameters()).device)

    def record(source: int, curve: TaskCurve) -> None:
        table[source, 0], table[source, 1] = curve.test_error, curve.test_loss
        table[source, 2: 2 + k], table[source, 2 + k:] = curve.train_error, curve.train_loss

    batched = select_engine(model, loop, engine=engine, compile=compile, max_tasks_per_chunk=max_tasks_per_chunk,
                            example=lambda: example_input(benchmark, split))
    pending = []  # batched: (source, (task, generator), starting parameters), trained together below
    mine = distributed.shard(range(n))
    for done, source in enumerate(mine, 1):
        generator = derived_generator(seed, "eval", split, source)
        task = benchmark.task(split, source, generator, seed)
        model.load_state_dict(init)
        reset_running_stats(model)  # batch norm's statistics come from this task's training alone
        if fresh_heads:
            reset_head(model, seed, "eval-head", split, source)
        if batched is not None:
            pending.append((source, (task, generator), {k: v.detach().clone() for k, v in model.state_dict().items()}))
            continue
        record(source, train_task(model, task, loop, generator))
        if on_tasks is not None:
            on_tasks(done, len(mine))
    if batched is not None and pending:
        curves = batched.train([draw for _, draw, _ in pending], starts=[start for _, _, start in pending])
        for (source, _, _), curve in zip(pending, curves, strict=True):
            record(source, curve)
        if on_tasks is not None:
            on_tasks(len(mine), len(mine))
    distributed.all_reduce_sum([table])
    train_errors, train_losses = table[:, 2: 2 + k].contiguous(), table[:, 2 + k:].contiguous()  # (tasks, K)
    return EvalResult(
        test_errors=table[:, 0].tolist(),
        aucs=train_errors.mean(1).tolist(),
        curve=train_errors.mean(0).tolist(),
        test_losses=table[:, 1].tolist(),
        loss_aucs=train_losses.mean(1).tolist(),
        loss_curve=train_losses.mean(0).tolist(),
    )
