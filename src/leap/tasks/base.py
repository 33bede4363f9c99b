"""Task datasets, kept apart from the learners.

A [`Task`][leap.tasks.base.Task] is one learning problem (the τ of section 2.2): a training set the inner
loop samples minibatches from, and a held-out test set. A [`Benchmark`][leap.tasks.base.Benchmark] is a task
family: it makes the model and draws tasks from its pretraining, validation and test
pools.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

Augment = Callable[[Tensor, torch.Generator], Tensor]


@runtime_checkable
class SplitAugment(Protocol):
    """An augmentation whose randomness is drawn apart from its application, so that the
    batched engine can draw every step's randomness first, in ``Task.sample``'s order, and
    augment the images of all steps and tasks in one call. ``aug(x, g)`` must equal
    ``aug.apply(x, aug.draw(len(x), g))``.
    """

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor: ...

    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        """The randomness of ``n`` images, (n, P), on the generator's device."""
        ...

    def apply(self, x: Tensor, randomness: Tensor) -> Tensor:
        """``x`` (n, *input) augmented with ``randomness`` (n, P)."""
        ...


@dataclass
class Task:
    """One classification task.

    Shapes: ``train_x`` (N, *input), ``train_y`` (N,) int64 in [0, num_classes), and the
    same for the test set. ``augment`` (optional) maps a batch (B, *input) to an augmented
    batch of the same shape, drawing randomness from the given generator.
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    augment: Augment | None = None
    source: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """A training minibatch drawn uniformly with replacement (then augmented)."""
        idx = self.draw_index(batch_size, generator).to(self.train_y.device)
        x = self.train_x[idx]
        if self.augment is not None:
            x = self.augment(x, generator)
        return x, self.train_y[idx]

    def sample_test(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """A minibatch of the task's held-out data (for FOMAML/MAML's query loss)."""
        idx = self.draw_index(batch_size, generator, test=True).to(self.test_y.device)
        return self.test_x[idx], self.test_y[idx]

    def draw_index(self, batch_size: int, generator: torch.Generator, test: bool = False) -> Tensor:
        """The (batch_size,) int64 indices that ``sample`` (``sample_test`` if ``test``)
        gathers, uniform with replacement, on the generator's device. The one place the
        draw is made, so that the batched engine consumes each generator exactly as the
        sequential loop does."""
        n = len(self.test_y if test else self.train_y)
        return torch.randint(n, (batch_size,), generator=generator, device=generator.device)

    def to(self, device: torch.device | str) -> Task:
        return Task(
            self.name, self.train_x.to(device), self.train_y.to(device), self.test_x.to(device),
            self.test_y.to(device), self.num_classes, self.augment, self.source, dict(self.meta),
        )


class Benchmark(Protocol):
    """A task family. ``split`` is one of ``"train"`` (pretraining), ``"val"``, ``"test"``."""

    name: str
    num_classes: int

    def make_model(self) -> nn.Module:
        """A freshly initialized model (uses the global torch RNG)."""
        ...

    def num_sources(self, split: str) -> int:
        """How many task sources (e.g. alphabets) the split holds."""
        ...

    def task(self, split: str, source: int, generator: torch.Generator, task_seed: int = 0) -> Task:
        """Task ``source`` of ``split`` for one visit: ``task_seed`` (the run's seed) fixes
        what the task is (e.g. which characters, in which label order), the same at every
        visit; ``generator`` draws this visit's randomness (augmentation)."""
        ...


def example_input(benchmark: Benchmark, split: str = "train") -> Tensor:
    """One input of ``benchmark`` (a batch of one), from its first task of ``split``:
    what the checks made before a run (memory, the engine's cost) measure the model on."""
    generator = torch.Generator().manual_seed(0)
    x, _ = benchmark.task(split, 0, generator).sample(1, generator)
    return x
