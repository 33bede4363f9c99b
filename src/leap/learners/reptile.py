"""Reptile (Nichol et al. 2018): θ0 <- θ0 + ε·mean_τ(θ_K^τ - θ0).

As a hook, the per-task meta-gradient is θ0 - θ_K, so that any torch optimizer with
learning rate ε applies the Reptile step. ``update`` does nothing; θ_K is read from the
model given to ``to()`` (or to ``end_task``) when the task closes. This is exactly
Leap with the energy metric, no loss in the manifold and no stabilizer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from leap.learners.base import MetaLearner


class Reptile(MetaLearner):
    """Reptile as a hook with the same calls as `leap.Leap`."""

    def __init__(self, model: nn.Module, params=None) -> None:
        super().__init__(model, params)
        self._task_model: nn.Module | None = None

    def to(self, model: nn.Module) -> nn.Module:
        self._task_model = model
        return super().to(model)

    def update(self, loss: Tensor, model: nn.Module) -> None:
        self._require_open("update")
        self._task_model = model

    def endpoint_contributions(self, final: Sequence[Tensor], last_grads: Sequence[Tensor]) -> list[Tensor]:
        # θ0 - θ_K per task, as _finish_task
        return [p0.detach().unsqueeze(0) - pk for p0, pk in zip(self._init, final, strict=True)]

    @torch.no_grad()
    def _finish_task(self, model: nn.Module | None, loss: Tensor | None) -> None:
        model = model if model is not None else self._task_model
        if model is None:
            raise RuntimeError("Reptile: no model for this task; call to(model) or end_task(model)")
        # θ0 - θ_K
        torch._foreach_add_(self._task_acc, [p.detach() for p in self._init])
        torch._foreach_sub_(self._task_acc, self.params_of(model))
        self._task_model = None
