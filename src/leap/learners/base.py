"""The hook protocol shared by every meta-learner.

A meta-learner owns the initialization θ0 (``parameters()``) and a meta-gradient
accumulator. A user's training loop talks to it through five calls::

    learner.init_task(); learner.to(model)       # start a task from θ0
    ...loss.backward(); learner.update(loss, model); opt.step()   # every inner step
    learner.end_task(model, loss)                # optional: the final point θ_K
    learner.normalize(); meta_opt.step()         # mean over tasks lands in θ0.grad

Each task's contribution is collected in a per-task buffer and added to the meta-batch
accumulator only if it is finite (``torch.where``, no host sync), so one diverging task
cannot poison the meta-gradient; ``normalize`` returns how many tasks contributed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

ParamSelector = Sequence[str] | Callable[[str, nn.Parameter], bool] | None


class Packed:
    """Zero tensors shaped like ``like``, stored in ONE contiguous buffer when they share
    a dtype and device (the usual case), else one tensor each.

    ``views`` has one tensor per entry of ``like``; ``whole`` is ``[buffer]`` when packed
    (else ``views``), so that an elementwise ``torch._foreach_*`` over ``whole`` is a single
    kernel instead of one per parameter tensor: on a CPU, where each small kernel costs a
    few microseconds of dispatch, that is most of the hook's cost.
    """

    def __init__(self, like: Sequence[Tensor]) -> None:
        kinds = {(t.dtype, t.device) for t in like}
        if len(kinds) == 1:
            dtype, device = kinds.pop()
            self.buffer: Tensor | None = torch.zeros(sum(t.numel() for t in like), dtype=dtype, device=device)
            sizes = [t.numel() for t in like]
            self.views = [v.view(t.shape) for v, t in zip(self.buffer.split(sizes), like, strict=True)]
            self.whole = [self.buffer]
        else:
            self.buffer = None
            self.views = [torch.zeros_like(t) for t in like]
            self.whole = self.views

    def load_(self, tensors: Sequence[Tensor]) -> None:
        """Copy ``tensors`` (shaped like ``views``) in, one ``_foreach_copy_`` into the views
        (measured faster than ``cat(out=buffer)`` on a CPU, docs/benchmarks.md)."""
        torch._foreach_copy_(self.views, list(tensors))

    def zero_(self) -> None:
        torch._foreach_zero_(self.whole)

    def all_finite(self) -> Tensor:
        """0-dim bool on the device (no host sync)."""
        if self.buffer is not None:
            return self.buffer.isfinite().all()
        return torch.stack([t.isfinite().all() for t in self.views]).all()


def unwrap(model: nn.Module) -> nn.Module:
    """The module itself under ``torch.compile`` (whose wrapper prefixes every name with
    ``_orig_mod.``), so a learner built on either form works with both."""
    return getattr(model, "_orig_mod", model)


def select_parameters(model: nn.Module, params: ParamSelector) -> list[tuple[str, nn.Parameter]]:
    """Resolve ``params`` (None, a list of names, or a predicate) to named parameters.

    Raises ``TypeError`` for an unsupported selector and ``ValueError`` for unknown
    names or an empty selection.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    model = unwrap(model)
    named = list(model.named_parameters())
    if params is None:
        chosen = named
    elif callable(params):
        chosen = [(n, p) for n, p in named if params(n, p)]
    elif isinstance(params, (list, tuple, set, frozenset)):
        wanted = list(params)
        known = {n for n, _ in named}
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise ValueError(f"params: unknown parameter name(s) {unknown}; model has {sorted(known)}")
        chosen = [(n, p) for n, p in named if n in set(wanted)]
    else:
        raise TypeError(
            "params must be None, a list of parameter names or a predicate (name, param) -> bool, "
            f"got {type(params).__name__}"
        )
    if not chosen:
        raise ValueError("params selects no parameter of the model")
    return chosen


class MetaLearner:
    """Base class: holds θ0, the accumulators and the task bookkeeping.

    Args:
        model: the network whose initialization is meta-learned. Construct the learner
            after moving the model to its device; θ0 lives on the same device and dtype.
        params: which parameters are meta-learned (None = all). The others (e.g. task
            heads) are left to the caller: ``to()`` does not touch them.
    """

    #: which loss at θ_K ``end_task`` wants from a training loop: ``"train"`` (a training
    #: minibatch), ``"query"`` (held-out data of the task) or None (no loss).
    final_loss: str | None = None
    #: the meta-objective of the last task ended, where the method measures one (Leap:
    #: its path's length or energy); NaN otherwise.
    last_path: float = math.nan

    def __init__(self, model: nn.Module, params: ParamSelector = None) -> None:
        named = select_parameters(model, params)
        self.param_names: list[str] = [n for n, _ in named]
        self._init: list[nn.Parameter] = [nn.Parameter(p.detach().clone()) for _, p in named]
        # Buffers (e.g. batch-norm running statistics) are not meta-learned: every task
        # starts from the values the model had when the learner was built.
        self._buffers: dict[str, Tensor] = {n: b.detach().clone() for n, b in unwrap(model).named_buffers()}
        # The meta-batch and the current task's accumulators, one tensor per parameter
        # (``_acc``, ``_task_acc``) viewing one packed buffer each.
        self._acc_packed, self._task_packed = Packed(self._init), Packed(self._init)
        self._acc: list[Tensor] = self._acc_packed.views
        self._task_acc: list[Tensor] = self._task_packed.views
        device = self._init[0].device
        self._valid_tasks = torch.zeros((), device=device)
        self._num_tasks = 0
        self._task_open = False
        self._model: nn.Module | None = None
        self._model_params: list[Tensor] = []
        self._warned_no_grad = False

    # ------------------------------------------------------------------ θ0
    def parameters(self) -> Iterator[nn.Parameter]:
        """θ0, the tensors to give to the meta-optimizer."""
        return iter(self._init)

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return iter(zip(self.param_names, self._init, strict=True))

    def initial_buffers(self) -> dict[str, Tensor]:
        """The buffers every task starts from (the model's at construction), by name."""
        return dict(self._buffers)

    def params_of(self, model: nn.Module) -> list[Tensor]:
        """The model's tensors that correspond to θ0, in the learner's order (cached)."""
        if model is not self._model:
            lookup = dict(unwrap(model).named_parameters())
            missing = [n for n in self.param_names if n not in lookup]
            if missing:
                raise ValueError(f"model lacks the meta-learned parameter(s) {missing}")
            self._model_params = [lookup[n] for n in self.param_names]
            for name, p, q in zip(self.param_names, self._model_params, self._init, strict=True):
                self._check_matches(name, p, q)
            self._model = model
        else:  # the same module: it may have been moved or cast since (model.double(), .to(...))
            self._check_matches(self.param_names[0], self._model_params[0], self._init[0])
        return self._model_params

    @staticmethod
    def _check_matches(name: str, p: Tensor, q: Tensor) -> None:
        if p.shape != q.shape or p.device != q.device or p.dtype != q.dtype:
            raise ValueError(
                f"parameter {name!r}: model has {p.dtype} {tuple(p.shape)} on {p.device}, learner has "
                f"{q.dtype} {tuple(q.shape)} on {q.device}; build the learner after moving or casting the model"
            )

    def _grads(self, params: list[Tensor]) -> list[Tensor]:
        """``model_grads`` of the meta-learned tensors, warning once when none has a
        gradient (``update`` called before ``loss.backward()``)."""
        if not self._warned_no_grad and all(p.grad is None for p in params):
            warnings.warn(f"{type(self).__name__}.update() found no gradients: call loss.backward() before "
                          "update() (and opt.step() after)", stacklevel=3)
            self._warned_no_grad = True
        return model_grads(params)

    @torch.no_grad()
    def to(self, model: nn.Module) -> nn.Module:
        """Load θ0 (and the initial buffers) into ``model``; other parameters are untouched."""
        torch._foreach_copy_(self.params_of(model), [p.detach() for p in self._init])
        for name, buf in unwrap(model).named_buffers():
            if name in self._buffers:
                buf.copy_(self._buffers[name])
        return model

    # ------------------------------------------------------------------ task protocol
    def init_task(self) -> None:
        """Start a new task (closes the previous one if ``end_task`` was not called)."""
        if self._task_open:
            self._close_task(None, None)
        self._task_packed.zero_()
        self._task_open = True
        self._num_tasks += 1
        self._begin_task()

    def update(self, loss: Tensor, model: nn.Module) -> None:
        """Called every inner step after ``loss.backward()`` and before ``opt.step()``."""
        self._require_open("update")

    def end_task(self, model: nn.Module | None = None, loss: Tensor | None = None) -> None:
        """Close the current task; ``model``/``loss`` describe the final point θ_K."""
        self._require_open("end_task")
        self._close_task(model, loss)

    @torch.no_grad()
    def endpoint_contributions(self, final: Sequence[Tensor], last_grads: Sequence[Tensor]) -> list[Tensor]:
        """T tasks' meta-gradients from where their training ended, for a learner whose
        contribution depends on that alone (Reptile, FOMAML): ``final[j]`` is θ_K and
        ``last_grads[j]`` ∇f(θ_{K-1}), each (T, *shape of θ0's j-th tensor), in
        ``param_names`` order. The batched engine adds the result with
        `add_task_contributions()`. A learner whose contribution is built along the
        path (Leap, eq. 8 per segment) or through it (MAML) raises ``NotImplementedError``.
        """
        raise NotImplementedError(f"{type(self).__name__}'s meta-gradient is not a function of the endpoints")

    def add_task_contributions(self, contributions: Sequence[Tensor]) -> Tensor:
        """Add T tasks' meta-gradients at once (what T init_task ... end_task rounds add).

        ``contributions[j]`` is (T, *shape of θ0's j-th tensor), in ``param_names``
        order. As in ``end_task``, a task whose contribution is not finite is left out
        (``torch.where``, no host sync) and every task counts in ``normalize``. Returns
        the (T,) bool mask of the tasks that contributed.
        """
        if self._task_open:
            self._close_task(None, None)
        if len(contributions) != len(self._init):
            raise ValueError(f"expected {len(self._init)} tensors, got {len(contributions)}")
        tasks = contributions[0].shape[0] if contributions[0].dim() else 0
        for name, p, c in zip(self.param_names, self._init, contributions, strict=True):
            if c.shape != (tasks, *p.shape):
                raise ValueError(f"contribution for {name!r}: shape {tuple(c.shape)}, expected {(tasks, *p.shape)}")
        finite = torch.stack([c.flatten(1).isfinite().all(1) for c in contributions]).all(0)  # (T,)
        for acc, c in zip(self._acc, contributions, strict=True):
            mask = finite.view(-1, *([1] * (c.dim() - 1)))
            acc.add_(torch.where(mask, c, torch.zeros((), dtype=c.dtype, device=c.device)).sum(0))
        self._valid_tasks.add_(finite.sum().to(self._valid_tasks.dtype))
        self._num_tasks += tasks
        return finite

    def normalize(self, reduce: Callable[[list[Tensor]], None] | None = None) -> Tensor:
        """Write the mean per-task meta-gradient into ``.grad`` of ``parameters()``.

        Gradients accumulate into an existing ``.grad`` (autograd's convention) and are
        created where ``.grad`` is None. Tasks with a non-finite contribution are left
        out of the mean. Returns the number of tasks that contributed (a 0-dim tensor,
        on θ0's device, so that reading it is the caller's choice of sync point).

        ``reduce``, if given, receives the accumulators (the sum of this process's valid
        task contributions, one tensor per parameter) followed by the 0-dim count of
        valid tasks, and must sum each of them in place across processes (e.g.
        [`leap.util.distributed.all_reduce_sum()`][leap.util.distributed.all_reduce_sum]); the mean is then taken
        over every
        process's tasks. With ``reduce``, a process that trained no task is allowed.
        """
        if self._task_open:
            self._close_task(None, None)
        if self._num_tasks == 0 and reduce is None:
            raise RuntimeError("normalize() called before any init_task()")
        if reduce is not None:
            reduce([*self._acc, self._valid_tasks])
        valid = self._valid_tasks.clone()
        scale = valid.clamp_min(1.0).reciprocal()
        for p, acc in zip(self._init, self._acc, strict=True):
            g = acc * scale
            if p.grad is None:
                p.grad = g
            else:
                p.grad.add_(g)
        self._acc_packed.zero_()
        self._valid_tasks.zero_()
        self._num_tasks = 0
        return valid

    # ------------------------------------------------------------------ state
    def hyperparameters(self) -> dict[str, Any]:
        """What the learner is besides its tensors (saved with them by `state_dict()`)."""
        return {"class": type(self).__name__, "params": list(self.param_names)}

    def state_dict(self) -> dict[str, Any]:
        """θ0 (``init.<name>``), the meta-batch accumulator (``acc.<name>``), counters and
        the ``hyperparameters`` (a state of an energy-metric Leap does not load into a
        length-metric one)."""
        state: dict[str, Any] = {f"init.{n}": p.detach().clone() for n, p in self.named_parameters()}
        state.update({f"acc.{n}": a.clone() for n, a in zip(self.param_names, self._acc, strict=True)})
        state["valid_tasks"] = self._valid_tasks.clone()
        state["num_tasks"] = torch.tensor(self._num_tasks)
        state["hyperparameters"] = self.hyperparameters()
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Load a `state_dict()`. ``strict`` (default): its keys and hyperparameters
        must be this learner's exactly (ValueError otherwise)."""
        expected = {f"init.{n}" for n in self.param_names}
        missing = sorted(expected - set(state))
        if missing:
            raise ValueError(f"state_dict lacks {missing}")
        if strict:
            known = expected | {f"acc.{n}" for n in self.param_names} | {"valid_tasks", "num_tasks", "hyperparameters"}
            unexpected = sorted(set(state) - known)
            if unexpected:
                raise ValueError(f"state_dict has unexpected key(s) {unexpected[:5]}")
            saved = state.get("hyperparameters")
            if saved is not None and saved != self.hyperparameters():
                differ = sorted(k for k in {*saved, *self.hyperparameters()}
                                if saved.get(k) != self.hyperparameters().get(k))
                raise ValueError(f"state_dict is of another learner (hyperparameters differ in {differ})")
        for n, p, acc in zip(self.param_names, self._init, self._acc, strict=True):
            src = state[f"init.{n}"]
            if src.shape != p.shape:
                raise ValueError(f"state_dict entry init.{n} has shape {tuple(src.shape)}, expected {tuple(p.shape)}")
            p.copy_(src)
            acc.copy_(state.get(f"acc.{n}", torch.zeros_like(acc)))
        self._valid_tasks.copy_(state.get("valid_tasks", torch.zeros(())))
        self._num_tasks = int(state.get("num_tasks", torch.tensor(0)))
        self._task_open = False

    # ------------------------------------------------------------------ subclass hooks
    def _begin_task(self) -> None:
        """Reset per-task state (called by ``init_task``)."""

    def _finish_task(self, model: nn.Module | None, loss: Tensor | None) -> None:
        """Add the final contribution of the task into ``self._task_acc``."""

    # ------------------------------------------------------------------ internals
    def _require_open(self, what: str) -> None:
        if not self._task_open:
            raise RuntimeError(f"{what}() called outside a task: call init_task() first")

    @torch.no_grad()
    def _close_task(self, model: nn.Module | None, loss: Tensor | None) -> None:
        self._finish_task(model, loss)
        finite = self._task_packed.all_finite()
        for acc, t in zip(self._acc_packed.whole, self._task_packed.whole, strict=True):
            acc.add_(torch.where(finite, t, torch.zeros((), dtype=t.dtype, device=t.device)))
        self._valid_tasks.add_(finite.to(self._valid_tasks.dtype))
        self._task_open = False


def model_grads(params: Iterable[Tensor]) -> list[Tensor]:
    """``p.grad`` for each tensor, zeros where a parameter received no gradient."""
    return [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
