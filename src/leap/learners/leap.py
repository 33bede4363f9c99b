r"""Leap: the pull-forward meta-gradient (paper section 2.3, eqs. 5-8, Algorithm 1).

With the Jacobians J_i(θ0) approximated by the identity and evaluated at θ0 = ψ0
(so the baseline path Ψ is the path the task actually took), segment i of a task's
trajectory θ_0..θ_K contributes (eq. 8)

$$
g_i = -\frac{\Delta\theta_i + \Delta f_i \, \nabla f(\theta_i)}{n_i}, \qquad
\Delta\theta_i = \theta_{i+1} - \theta_i, \qquad \Delta f_i = f(\theta_{i+1}) - f(\theta_i)
$$

with n_i = 1 for the energy metric (d2) and \(n_i = \lVert \gamma_{i+1} - \gamma_i \rVert\) for
the length metric (d1), γ = (θ, f(θ)) when the loss is part of the task manifold and
γ = θ when it is not (then the Δf term is dropped as well). The stabilizer μ replaces
Δf_i by -|Δf_i| in the gradient term (n_i unchanged). The constant p of eq. 8 is dropped.

The meta-gradient is the mean over tasks of Σ_i g_i; the meta-optimizer applies
\(\theta_0 \leftarrow \theta_0 - \beta \, \bar g\). Energy without loss and stabilizer gives
θ0 - θ_K: Reptile.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from leap.learners.base import MetaLearner, Packed, ParamSelector

Metric = Literal["length", "energy"]


class Leap(MetaLearner):
    """The Leap hook: accumulates eq. 8 on the fly during ordinary training.

    Call ``update(loss, model)`` after ``loss.backward()`` and before the inner
    optimizer's ``step()``: the model then holds θ_i, ``loss`` is f(θ_i) and
    ``.grad`` is ∇f(θ_i). Each call closes the segment that ended at the current point.
    The segment from the last update to θ_K is counted only when ``end_task(model,
    loss_K)`` (or one more ``update``) supplies f(θ_K); without it a task of K steps
    contributes its first K-1 segments.

    Cost per step: two ``_foreach_copy_`` calls (θ_i and ∇f(θ_i) into packed buffers) and at most
    four kernels over whole buffers ([`leap.learners.base.Packed`][leap.learners.base.Packed]), however many tensors
    the model has; no autograd graph. On a GPU the segment's scalars (f, Δf, n_i) stay
    0-dim tensors, so there is no host sync; on a CPU, where reading a value costs nothing,
    they are Python floats, which measured faster than a dozen 0-dim tensor ops
    (docs/benchmarks.md).

    Args:
        model: network whose initialization is learned (all parameters or ``params``).
        metric: ``"length"`` (d1) or ``"energy"`` (d2).
        loss_in_manifold: γ = (θ, f(θ)) if True, γ = θ otherwise.
        stabilizer: replace Δf by -|Δf| in the gradient term.
        params: None (all parameters), a list of names, or a predicate (name, param).
        eps: floor of the segment length n_i (length metric), guarding 0/0.

    After ``end_task``, ``last_path`` is the finished task's meta-objective: the length
    Σ_i ‖γ_{i+1} - γ_i‖ of its path (d1, eq. 5) or its energy Σ_i ‖γ_{i+1} - γ_i‖² (d2),
    over the segments counted (a float; NaN before any task ended). Leap lowers its
    mean over tasks; a run logs it to show that it does.
    """

    final_loss = "train"  # end_task wants f(θ_K) on a training batch: the last segment

    def __init__(
        self,
        model: nn.Module,
        metric: Metric = "length",
        loss_in_manifold: bool = True,
        stabilizer: bool = True,
        params: ParamSelector = None,
        eps: float = 1e-12,
    ) -> None:
        if metric not in ("length", "energy"):
            raise ValueError(f"metric must be 'length' or 'energy', got {metric!r}")
        if not isinstance(loss_in_manifold, bool) or not isinstance(stabilizer, bool):
            raise TypeError("loss_in_manifold and stabilizer must be bool")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        super().__init__(model, params)
        self.metric: Metric = metric
        self.loss_in_manifold = loss_in_manifold
        self.stabilizer = stabilizer
        self.eps = eps
        # The previous point (θ_i, ∇f(θ_i)) and the current θ, packed; ``_prev`` and
        # ``_current`` swap roles after each step instead of copying.
        self._prev, self._current, self._prev_grads = Packed(self._init), Packed(self._init), Packed(self._init)
        self._host_scalars = self._init[0].device.type == "cpu"
        self._prev_loss: Tensor | float = (
            0.0 if self._host_scalars else torch.zeros((), dtype=self._init[0].dtype, device=self._init[0].device))
        self._has_prev = False
        self._path: Tensor | float = 0.0
        self.last_path = math.nan

    def __repr__(self) -> str:
        return (
            f"Leap(metric={self.metric!r}, loss_in_manifold={self.loss_in_manifold}, "
            f"stabilizer={self.stabilizer}, params={len(self.param_names)} tensors)"
        )

    def _begin_task(self) -> None:
        self._has_prev = False
        self._path = 0.0

    def hyperparameters(self) -> dict[str, object]:
        return {**super().hyperparameters(), "metric": self.metric, "loss_in_manifold": self.loss_in_manifold,
                "stabilizer": self.stabilizer, "eps": self.eps}

    @torch.no_grad()
    def update(self, loss: Tensor, model: nn.Module) -> None:
        """Record the point (θ_i, f(θ_i), ∇f(θ_i)) and count the segment that ends here."""
        self._require_open("update")
        params = self.params_of(model)
        loss_value = self._loss_value(loss)
        self._current.load_(params)
        if self._has_prev:
            self._add_segment(loss_value)
        self._prev, self._current = self._current, self._prev
        self._prev_grads.load_(self._grads(params))
        if self._host_scalars:
            self._prev_loss = loss_value
        else:
            self._prev_loss.copy_(loss_value)
        self._has_prev = True

    def _loss_value(self, loss: Tensor) -> Tensor | float:
        """f(θ) as the segment's scalars are kept: a Python float on a CPU, else a
        detached 0-dim tensor of θ0's dtype."""
        if self._host_scalars:
            return float(loss)
        return loss.detach().to(self._init[0].dtype)

    def _finish_task(self, model: nn.Module | None, loss: Tensor | None) -> None:
        if model is not None and loss is not None and self._has_prev:
            with torch.no_grad():
                self._current.load_(self.params_of(model))
                self._add_segment(self._loss_value(loss))
        self._has_prev = False
        self.last_path = float(self._path)  # one host sync per task where the scalars are tensors

    def _add_segment(self, loss: Tensor | float) -> None:
        """Add g_i of the segment (previous point -> ``_current``, whose loss is ``loss``)
        to the task accumulator (eq. 8), over whole packed buffers.

        The previous θ buffer is consumed in place (see
        [`accumulate_segment_()`][leap.learners.leap.accumulate_segment_]).
        """
        squared = accumulate_segment_(
            self._task_packed.whole, self._prev.whole, self._prev_grads.whole, self._prev_loss, self._current.whole,
            loss,
            metric=self.metric, loss_in_manifold=self.loss_in_manifold, stabilizer=self.stabilizer, eps=self.eps,
            measure=True,
        )
        if self.metric == "length":
            self._path = self._path + (math.sqrt(squared) if isinstance(squared, float) else squared.sqrt())
        else:
            self._path = self._path + squared


def accumulate_segment_(
    acc: list[Tensor],
    prev_params: list[Tensor],
    prev_grads: list[Tensor],
    prev_loss: Tensor | float,
    params: list[Tensor],
    loss: Tensor | float,
    *,
    metric: Metric,
    loss_in_manifold: bool,
    stabilizer: bool,
    eps: float,
    measure: bool = False,
) -> Tensor | float | None:
    r"""``acc += g_i`` for the segment θ_i -> θ_{i+1} of eq. 8; the one place the formula lives.

    $$
    g_i = -\frac{\Delta\theta_i + \Delta f_i \, \nabla f(\theta_i)}{n_i}
    $$

    (Δf_i -> -|Δf_i| in the gradient term with the stabilizer; no Δf term and n_i over θ
    alone when the loss is not in the manifold; n_i = 1 for the energy metric).

    Shapes: either one task, ``loss``/``prev_loss`` 0-dim tensors or Python floats (then
    n_i and the coefficients are computed as floats) and every list entry shaped like its
    parameter, or T tasks at once (the batched engine), ``loss``/``prev_loss`` (T,) and
    every list entry (T, *parameter shape); n_i is then computed per task.
    ``prev_params`` (θ_i), ``prev_grads`` (∇f(θ_i)) and ``prev_loss`` (f(θ_i)) describe the
    start point, ``params`` (θ_{i+1}) and ``loss`` (f(θ_{i+1})) the frozen forward point.

    ``prev_params`` is consumed in place (it becomes -Δθ) so that a segment allocates
    nothing model-sized; callers overwrite it with the next point afterwards. Each scaled
    term is added with one pass (``add`` with a float ``alpha``, or ``addcmul`` with a
    tensor coefficient): on a CPU most of the hook's cost is memory traffic
    over buffers that the training step has evicted from the caches (docs/benchmarks.md).

    With ``measure``, returns the segment's squared length ‖γ_{i+1} - γ_i‖² (n_i² of the
    length metric; a float, a 0-dim or a (T,) tensor, like ``loss``), the term of the
    meta-objective; else None (the energy metric then computes no norm).
    """
    on_host = isinstance(loss, float)
    batched = not on_host and loss.dim() > 0
    neg_dtheta = prev_params
    torch._foreach_sub_(neg_dtheta, params)  # θ_i - θ_{i+1} = -Δθ_i
    delta_f = loss - prev_loss  # Δf_i: a float, 0-dim or (T,)
    sq = None
    if metric == "length" or measure:
        if batched:  # one squared norm per task: reduce every dim but the task dim
            # (a plain sum over dims, not flatten + stack: inductor's CPU backend in
            # torch 2.13 fails to compile the latter for 5-dim conv weights)
            sq = sum(t.square().sum(dim=tuple(range(1, t.dim()))) if t.dim() > 1 else t.square()
                     for t in neg_dtheta)
        else:  # one dot product per tensor (one in all for packed buffers): BLAS, the fastest
            # reduction measured on a CPU (docs/benchmarks.md), and no square of a rounded norm
            dots = [torch.dot(t.reshape(-1), t.reshape(-1)) for t in neg_dtheta]
            sq = math.fsum(d.item() for d in dots) if on_host else torch.stack(dots).sum()
        if loss_in_manifold:
            sq = sq + delta_f * delta_f
    if metric == "length":
        if on_host:
            inv_n = 1.0 / max(math.sqrt(sq), eps)
        else:
            inv_n = sq.sqrt().clamp_min(eps).reciprocal()
        _add_scaled_(acc, neg_dtheta, inv_n)
    else:
        inv_n = None
        torch._foreach_add_(acc, neg_dtheta)
    if loss_in_manifold:
        df = -abs(delta_f) if stabilizer else delta_f
        coef = -df if inv_n is None else -df * inv_n
        _add_scaled_(acc, prev_grads, coef)
    return sq if measure else None

def _add_scaled_(acc: list[Tensor], tensors: list[Tensor], coef: Tensor | float) -> None:
    """``acc += coef * tensors`` in one pass per tensor (no temporary): ``coef`` a Python
    float, a 0-dim tensor, or (T,) broadcast over each tensor's leading task dim."""
    if isinstance(coef, float):
        torch._foreach_add_(acc, tensors, alpha=coef)
    elif coef.dim() == 0:
        torch._foreach_addcmul_(acc, tensors, [coef] * len(tensors))
    else:
        for a, t in zip(acc, tensors, strict=True):
            a.addcmul_(t, coef.view(-1, *([1] * (t.dim() - 1))))
