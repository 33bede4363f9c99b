"""The meta-update θ0 ← θ0 - β ∇F (Algorithm 1, line 13), the same for every experiment.

A trainer's ``step()`` trains the tasks of a meta-step and leaves the meta-gradient,
normalized (and under torchrun summed over the ranks), in its learner: it calls
[`normalize_meta_gradient()`][leap.engine.meta_update.normalize_meta_gradient]. Then
[`leap.engine.loop.fit()`][leap.engine.loop.fit] applies it with
[`meta_update()`][leap.engine.meta_update.meta_update]: at the rate the run's schedule
gives for that meta-step (``--meta-lr`` and the changes recorded in config.json), and
rolled back when it makes θ0 non-finite, so that the run stops with θ0 intact.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from leap.learners import MetaLearner
from leap.util import distributed


def normalize_meta_gradient(learner: MetaLearner, riders: Sequence[Tensor] = ()) -> int:
    """Normalize ``learner``'s accumulated meta-gradient over the tasks that contributed;
    under torchrun it is summed over the ranks first, in one collective that also sums
    ``riders`` in place (a trainer's metrics and stop flags travel with it). Returns the
    number of tasks in the meta-gradient (over all ranks)."""
    def reduce(tensors: list[Tensor]) -> None:
        distributed.all_reduce_sum([*tensors, *riders])

    return int(learner.normalize(reduce if distributed.active() else None).item())


def without_accumulated_tasks(learner_state: dict[str, Any]) -> dict[str, Any]:
    """A learner's ``state_dict()`` with its meta-batch accumulator emptied (θ0 kept).

    For a meta-step stopped between two tasks in a single process and resumed under
    torchrun: rank 0 loads the checkpoint as it is, the other ranks load this, so that the
    all-reduce counts the tasks already done once."""
    return {k: torch.zeros_like(v) if k.startswith("acc.") or k in ("valid_tasks", "num_tasks") else v
            for k, v in learner_state.items()}


def meta_update(optimizer: torch.optim.Optimizer, parameters: Iterable[Tensor], lr: float,
                tasks: int) -> dict[str, float] | None:
    """Step ``optimizer`` on the normalized meta-gradient of ``tasks`` tasks at rate ``lr``
    (no step when ``tasks`` is 0), then clear the gradient.

    Returns the update's sizes, L2 norms over every meta-parameter: ``meta_grad_norm``
    (the meta-gradient stepped on), ``meta_step_norm`` (how far θ0 moved) and
    ``init_norm`` (θ0 after the step), which tell whether the meta learning rate suits
    the gradient's scale. If the step makes a parameter non-finite (a rate far too high),
    the parameters and the optimizer's state are put back as they were and None is
    returned."""
    parameters = list(parameters)

    def norm(tensors: Iterable[Tensor]) -> float:
        return math.sqrt(math.fsum(float(t.detach().double().square().sum()) for t in tensors))

    if tasks <= 0:
        optimizer.zero_grad()
        return {"meta_grad_norm": 0.0, "meta_step_norm": 0.0, "init_norm": norm(parameters)}
    for group in optimizer.param_groups:
        group["lr"] = lr
    before = [p.detach().clone() for p in parameters]
    state = copy.deepcopy(optimizer.state_dict())
    grad_norm = norm(p.grad for p in parameters if p.grad is not None)
    optimizer.step()
    if all(bool(torch.isfinite(p).all()) for p in parameters):
        optimizer.zero_grad()
        return {"meta_grad_norm": grad_norm, "meta_step_norm": norm(p - b for p, b in zip(parameters, before,
                                                                                          strict=True)),
                "init_norm": norm(parameters)}
    with torch.no_grad():
        for p, b in zip(parameters, before, strict=True):
            p.copy_(b)
    optimizer.load_state_dict(state)
    optimizer.zero_grad()
    return None
