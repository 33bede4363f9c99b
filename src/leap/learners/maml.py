"""MAML (Finn et al. 2017) and its first-order approximation FOMAML.

Both meta-learn θ0 through the held-out ("query") loss of a task after K inner steps,
f_test(θ_K). MAML differentiates through the inner steps (second order, with
``torch.func.functional_call`` and ``create_graph=True``); FOMAML treats θ_K as a
constant function of θ0 (J = I) and uses ∇f_test(θ_K) as the task's meta-gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from leap.learners.base import MetaLearner, ParamSelector


class FOMAML(MetaLearner):
    """First-order MAML as a hook: same loop as :class:`leap.Leap`.

    ``update`` does nothing. After the inner steps, compute the task's held-out loss at
    θ_K (with autograd enabled) and call ``end_task(model, loss=query_loss)``; its
    gradient with respect to the meta-learned parameters is the task's contribution.
    """

    final_loss = "query"  # end_task wants the held-out loss at θ_K

    def update(self, loss: Tensor, model: nn.Module) -> None:
        self._require_open("update")

    def _finish_task(self, model: nn.Module | None, loss: Tensor | None) -> None:
        if model is None or loss is None:
            raise RuntimeError(
                "FOMAML needs the held-out loss at θ_K: call end_task(model, loss=query_loss)"
            )
        params = self.params_of(model)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
        torch._foreach_add_(self._task_acc, grads)


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
