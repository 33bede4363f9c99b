"""MAML (Finn et al. 2017) and its first-order approximation FOMAML, as the authors'
code runs them in the paper's experiments.

MAML meta-learns θ0 through the held-out loss of a task after K inner steps,
f_test(θ_K(θ0)), differentiating through the inner steps (second order, with
``torch.func.functional_call`` and ``create_graph=True``). FOMAML treats the inner steps
as the identity (J = I) and uses the gradient "at final iteration" (section 4.1): the
authors' code adds, for each task, the gradient of its last inner step, ∇f(θ_{K-1}) on
the K-th training minibatch, and takes the mean over tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from leap.learners.base import MetaLearner, ParamSelector


class FOMAML(MetaLearner):
    """First-order MAML as a hook, with exactly the calls of `leap.Leap`.

    A task's meta-gradient is the gradient of its last inner step (the authors' code):
    ``update`` keeps the gradient it is called with (after ``backward``, before the
    optimizer step), so when the task ends the kept one is ∇f(θ_{K-1}) on the K-th
    minibatch. ``end_task`` needs no loss.
    """

    def _begin_task(self) -> None:
        self._updates = 0

    @torch.no_grad()
    def endpoint_contributions(self, final: Sequence[Tensor], last_grads: Sequence[Tensor]) -> list[Tensor]:
        return list(last_grads)  # the last inner step's gradient, as update keeps it

    def update(self, loss: Tensor, model: nn.Module) -> None:
        self._require_open("update")
        params = self.params_of(model)
        torch._foreach_copy_(self._task_acc, self._grads(params))
        self._updates += 1

    def _finish_task(self, model: nn.Module | None, loss: Tensor | None) -> None:
        if self._updates == 0:
            raise RuntimeError("FOMAML: no inner step was taken; call update(loss, model) after each backward")


class MAML(MetaLearner):
    """Second-order MAML with the hook's bookkeeping (init_task/end_task/normalize).

    The inner loop must stay differentiable, so it runs on a dict of tensors::

        learner.init_task()
        fast = learner.fast_params(model)            # θ0 (differentiable) + other params
        for x, y in support:
            fast = learner.adapt(loss_fn(learner.forward(model, fast, x), y), fast)
        learner.end_task(loss=loss_fn(learner.forward(model, fast, xq), yq))

    Args:
        inner_lr: SGD step size of ``adapt`` (the inner update rule is plain SGD).
        first_order: if True, ``adapt`` does not build the second-order graph.
    """

    final_loss = "query"

    def __init__(
        self, model: nn.Module, inner_lr: float = 0.1, params: ParamSelector = None, first_order: bool = False
    ) -> None:
        if not inner_lr > 0:
            raise ValueError(f"inner_lr must be > 0, got {inner_lr}")
        super().__init__(model, params)
        self.inner_lr = inner_lr
        self.first_order = first_order

    def update(self, loss: Tensor, model: nn.Module) -> None:
        """Refused: MAML differentiates through the inner loop, which an ordinary loop's
        in-place optimizer steps cut, so its meta-gradient would be exactly zero."""
        raise RuntimeError(
            "MAML cannot watch an ordinary training loop (its meta-gradient differentiates through the inner "
            "steps): run the task with fast = learner.fast_params(model); fast = learner.adapt(loss, fast) per "
            "step; learner.end_task(loss=query_loss) -- or use leap.FOMAML with these calls")

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "inner_lr": self.inner_lr, "first_order": self.first_order}

    def fast_params(self, model: nn.Module) -> dict[str, Tensor]:
        """θ0 for the meta-learned names, the model's own tensors for the others."""
        fast = {n: p for n, p in model.named_parameters()}
        fast.update(dict(self.named_parameters()))
        return fast

    @staticmethod
    def forward(model: nn.Module, fast: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(model, fast, (x,))

    def adapt(self, loss: Tensor, fast: dict[str, Tensor]) -> dict[str, Tensor]:
        """One differentiable SGD step: θ_{i+1} = θ_i - α ∇f(θ_i)."""
        self._require_open("adapt")
        names = [n for n, t in fast.items() if t.requires_grad]
        grads = torch.autograd.grad(
            loss, [fast[n] for n in names], create_graph=not self.first_order, allow_unused=True
        )
        new = dict(fast)
        for n, g in zip(names, grads, strict=True):
            if g is not None:
                new[n] = fast[n] - self.inner_lr * g
        return new

    def _finish_task(self, model: nn.Module | None, loss: Tensor | None) -> None:
        if loss is None:
            raise RuntimeError("MAML needs the held-out loss after adaptation: call end_task(loss=query_loss)")
        grads = torch.autograd.grad(loss, self._init, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(self._init, grads, strict=True)]
        torch._foreach_add_(self._task_acc, grads)
