"""Inner optimizers on stacked parameters (T, *shape): one update rule per task, elementwise."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

#: The inner optimizers the batched engine has.
STACKED_OPTIMIZERS = ("sgd", "adam", "rmsprop")


class StackedOptimizer:
    """The inner optimizer of [`leap.engine.inner.InnerLoop`][leap.engine.inner.InnerLoop] applied to parameters
    with a leading
    task dimension, elementwise, so each task follows exactly its own update rule
    (eq. 1's u_τ). Same defaults as ``torch.optim`` (Adam: betas (0.9, 0.999), eps 1e-8;
    RMSprop: alpha 0.99, eps 1e-8; no momentum, no weight decay).

    ``update`` is functional in the parameters (returns new tensors: Leap still needs
    θ_i after the step) and updates the optimizer state in place. Adam's step count is a
    0-dim float64 tensor on the device, so that neither its bias correction reads the host
    nor a compiled step is specialized on the step number.
    """

    def __init__(self, name: str, lr: float) -> None:
        if name not in STACKED_OPTIMIZERS:
            raise ValueError(f"unsupported inner optimizer {name!r}")
        self.name = name
        self.lr = lr

    def init(self, params: list[Tensor]) -> dict[str, Any]:
        if self.name == "adam":
            return {"step": torch.zeros((), dtype=torch.float64, device=params[0].device),
                    "exp_avg": [torch.zeros_like(p) for p in params],
                    "exp_avg_sq": [torch.zeros_like(p) for p in params]}
        if self.name == "rmsprop":
            return {"square_avg": [torch.zeros_like(p) for p in params]}
        return {}

    def update(self, params: list[Tensor], grads: list[Tensor], state: dict[str, Any]) -> list[Tensor]:
        """θ_{i+1} for every task: (T, *shape) tensors in, new (T, *shape) tensors out."""
        if self.name == "sgd":
            return torch._foreach_add(params, grads, alpha=-self.lr)  # θ - α ∇f, as torch.optim.SGD
        if self.name == "rmsprop":
            alpha, eps = 0.99, 1e-8
            sq = state["square_avg"]
            torch._foreach_mul_(sq, alpha)
            torch._foreach_addcmul_(sq, grads, grads, value=1 - alpha)
            avg = torch._foreach_add(torch._foreach_sqrt(sq), eps)
            return torch._foreach_addcdiv(params, grads, avg, value=-self.lr)
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        # Out of place: under torch.compile (2.13, CPU) an in-place add_ on this 0-dim
        # float64 tensor is silently dropped; a new tensor in the dict is kept.
        step = state["step"] = state["step"] + 1
        step_size = self.lr / (1 - beta1**step)
        bias2_sqrt = (1 - beta2**step).sqrt()
        new = []
        for p, g, m, v in zip(params, grads, state["exp_avg"], state["exp_avg_sq"], strict=True):
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            new.append(p - step_size * m / (v.sqrt() / bias2_sqrt + eps))
        return new
