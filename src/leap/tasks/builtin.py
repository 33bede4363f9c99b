"""The built-in benchmark: a task family that needs no download and runs on 2 CPU cores.

Why it is a fair test of an initialization: all tasks share one hidden structure, a fixed
random feature map h(x) = tanh(W x) (16 -> 16), and differ in a task-specific readout:
the label of x is argmax_c (R_τ h(x))_c over 5 classes, with R_τ drawn independently per
task. A student network (an MLP, 2 x 64 hidden units) trained from a random init must
discover the shared features and the readout at once, which takes many SGD steps; an
initialization that already encodes features aligned with h only needs to adapt the
readout. Held-out tasks use readouts never seen in pretraining, so an init can only help
by having captured the shared structure, never by memorizing a task. Labels of held-out
tasks are as random as those of pretraining tasks (no class is privileged), so a head
that simply memorized one task would not help either.

The family is fixed (its own seed, independent of the run's seed): 40 pretraining
readouts, 10 validation, 10 test. Each task has 500 training and 500 test points.
"""

from __future__ import annotations

import torch
from torch import nn

from leap.models import MLP
from leap.tasks.base import Task

FAMILY_SEED = 20190506
SPLITS = {"train": (0, 40), "val": (40, 50), "test": (50, 60)}


class BuiltinBenchmark:
    """Shared-features classification tasks (see module docstring)."""

    name = "builtin"
    input_dim = 16
    feature_dim = 16
    num_classes = 5
    train_size = 500
    test_size = 500

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        g = torch.Generator().manual_seed(FAMILY_SEED)
        self._features = torch.randn(self.feature_dim, self.input_dim, generator=g) * (2.0 / self.input_dim**0.5)
        total = max(stop for _, stop in SPLITS.values())
        self._readouts = [torch.randn(self.num_classes, self.feature_dim, generator=g) for _ in range(total)]
        self._cache: dict[tuple[str, int], Task] = {}

    def make_model(self) -> nn.Module:
        return MLP(self.input_dim, self.num_classes).to(self.device)

    def num_sources(self, split: str) -> int:
        start, stop = _split(split)
        return stop - start

    def task(self, split: str, source: int, generator: torch.Generator | None = None, task_seed: int = 0) -> Task:
        """Task ``source`` of ``split``; its data is fixed (generator and seed are not used)."""
        start, stop = _split(split)
        if not 0 <= source < stop - start:
            raise ValueError(f"source must be in [0, {stop - start}) for split {split!r}, got {source}")
        key = (split, source)
        if key not in self._cache:
            index = start + source
            g = torch.Generator().manual_seed(FAMILY_SEED + 1 + index)
            x = torch.randn(self.train_size + self.test_size, self.input_dim, generator=g)
            y = (torch.tanh(x @ self._features.T) @ self._readouts[index].T).argmax(1)
            n = self.train_size
            self._cache[key] = Task(
                f"{split}-{source}", x[:n], y[:n], x[n:], y[n:], self.num_classes, source=source
            ).to(self.device)
        return self._cache[key]


def _split(split: str) -> tuple[int, int]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    return SPLITS[split]
