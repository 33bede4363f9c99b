"""The batched task engine: the T tasks of a meta-batch trained at once, as one program.

Training tasks one after another leaves a GPU idle: a small convnet on batches of 20 is
bound by kernel launches, not arithmetic. Here every parameter carries a leading task
dimension, (T, *shape), and one inner step of all T tasks is one functional forward and
backward (``torch.func.vmap`` over ``grad_and_value`` of ``functional_call``), one update
of the stacked inner optimizer, and, for Leap, one batched call of the same eq. 8 code the
hook runs ([`leap.learners.leap.accumulate_segment_()`][leap.learners.leap.accumulate_segment_], with a per-task
n_i). Under
``vmap`` each task's batch norm normalizes with its own batch statistics; buffers
(batch norm's running statistics) are stacked per task too and updated in place by the
functional forward, exactly as the sequential loop updates the model's, and test images
are classified in eval mode with them.

What stays exactly as in the sequential loop ([`leap.engine.inner.train_task()`][leap.engine.inner.train_task]):

- **Data.** Each task keeps its own generator and consumes it in the same order as
  ``Task.sample``: per step the minibatch indices (``Task.draw_index``) and, for an
  augmentation that splits its randomness from its application
  ([`leap.tasks.base.SplitAugment`][leap.tasks.base.SplitAugment], e.g. Omniglot's affine maps), its draw; then
  the final batch the learner asks for (Leap: a training batch). All draws of a chunk
  are made up front on the generators' device and moved to the model's device in one
  copy; gathering and the augmentation of every step of every task are then one gather
  and one ``augment.apply`` call. The engine knows no task family.
  Any other augmentation is applied task by task through ``Task.sample`` (same stream,
  just not batched).
- **Meta-gradients.** Leap: eq. 8 per segment through the shared function, the last
  segment closed with f(θ_K) on a fresh training batch; Reptile (θ0 - θ_K) and FOMAML
  (∇f(θ_{K-1})) by their own ``MetaLearner.endpoint_contributions``. Each task's contribution goes through
  ``MetaLearner.add_task_contributions`` (same finite check and count as ``end_task``).
- **Curves.** The same ``TaskCurve`` list, including the test error in chunks of
  ``TEST_CHUNK`` (batch statistics make the chunking part of the result).

Results agree with the sequential path up to float rounding (vmapped convolutions sum in
another order), not bit for bit. Nothing inside the K-step loop reads a value back to the
host. MAML's second-order inner loop and multi-headed finetuning (one model carried from
task to task) stay sequential.

Memory: a meta-batch is trained in chunks of at most ``max_tasks_per_chunk`` tasks
(default: all); on a CUDA out-of-memory error the chunk is halved and retried from the
same generator states, and the smaller size is kept for later calls.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap
from torch.utils.flop_counter import FlopCounterMode

from leap.engine.inner import TEST_CHUNK, InnerLoop, TaskCurve
from leap.engine.stacked_optim import STACKED_OPTIMIZERS, StackedOptimizer
from leap.engine.streams import TaskDraw, draw_stream
from leap.learners import Leap, MetaLearner
from leap.learners.leap import accumulate_segment_
from leap.util.checks import positive_int

ENGINES = ("auto", "batched", "sequential")



#: Why bf16 trains sequentially: measured with torch 2.13 on CPU, a convolution or linear
#: layer called under torch.func.vmap returns float32 inside ``torch.autocast`` (entered
#: inside or outside the vmapped function), so the batched engine would silently train
#: in float32.
BF16_NOT_BATCHED = ("the batched engine cannot run --precision bf16: torch.autocast does not reach operations "
                    "under torch.func.vmap; use --engine sequential (or auto)")


#: ``auto`` on a CPU trains batched when one inner step (forward + backward on a batch)
#: costs fewer FLOPs than this. Measured (docs/benchmarks.md, benchmarks/engine_crossover.py,
#: one thread): batched was faster at 0.6 and 6.7 MFLOP per step in both runs, mixed at 22,
#: slower at 79 and 299, and slower on the Omniglot convnet (1,160 MFLOP).
CPU_BATCHED_BELOW_FLOPS = 10e6


def resolve_engine(
    engine: str,
    device: torch.device | str,
    batchable: bool = True,
    precision: str = "fp32",
    step_flops: float | None = None,
) -> str:
    """``"batched"`` or ``"sequential"`` for a requested ``engine`` (one of ``ENGINES``).

    ``auto`` is batched on CUDA, where one launch for T tasks beats T launches. On a CPU
    it is batched only for models whose inner step costs fewer than
    `CPU_BATCHED_BELOW_FLOPS` (``step_flops``, see [`inner_step_flops()`][leap.engine.batched.inner_step_flops]; None:
    unknown, sequential): there the per-step overheads of one small task dominate, while
    larger models give each kernel enough work already (docs/benchmarks.md).
    ``batchable=False`` is always sequential: the method's meta-training cannot be
    batched (MAML differentiates through the inner loop, finetuning carries one model
    from task to task; ``Method.batched`` says which).
    ``precision="bf16"`` is sequential too (`BF16_NOT_BATCHED`; ``"batched"`` raises).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if not batchable:
        return "sequential"
    if precision == "bf16":
        if engine == "batched":
            raise ValueError(BF16_NOT_BATCHED)
        return "sequential"
    if engine == "auto":
        if torch.device(device).type == "cuda":
            return "batched"
        return "batched" if step_flops is not None and step_flops < CPU_BATCHED_BELOW_FLOPS else "sequential"
    return engine


def inner_step_flops(model: nn.Module, example: Tensor, batch: int) -> float:
    """FLOPs of one inner step of ``model``: forward and backward on a batch of ``batch``
    copies of ``example`` (a batch of one), counted on the ``meta`` device (no memory, no
    compute, the model untouched)."""
    meta_model = copy.deepcopy(model).to("meta")
    x = example[:1].to("meta").expand(max(batch, 2), *example.shape[1:])  # batch norm refuses one
    with FlopCounterMode(display=False) as counter:
        meta_model(x).float().sum().backward()
    return float(counter.get_total_flops())


def choose_engine(
    model: nn.Module,
    engine: str,
    *,
    batch: int,
    batchable: bool = True,
    precision: str = "fp32",
    example: Callable[[], Tensor] | None = None,
) -> str:
    """[`resolve_engine()`][leap.engine.batched.resolve_engine] for ``model`` on its own device, counting its inner
    step's
    FLOPs (on a batch of ``batch`` copies of ``example()``) only where the choice depends
    on them: ``auto`` on a CPU for a batchable method."""
    device = next(model.parameters()).device
    flops = None
    if engine == "auto" and device.type == "cpu" and batchable and precision != "bf16" and example is not None:
        flops = inner_step_flops(model, example(), batch)
    return resolve_engine(engine, device, batchable, precision, flops)


def resolve_compile(compile: bool | None, device: torch.device | str) -> bool:
    """``torch.compile`` on or off: ``None`` means on for CUDA and off on CPU (where the
    compile time is not paid back in short runs)."""
    return torch.device(device).type == "cuda" if compile is None else bool(compile)


def check_batchable(model: nn.Module, loop: InnerLoop | None = None) -> None:
    """Raise ``ValueError`` if ``model`` (with ``loop``) cannot be trained by the batched
    engine: it trains classifiers (a model may say ``batchable = False``, as the sequence
    models do), with SGD, Adam or RMSprop and no gradient clipping."""
    if not any(True for _ in model.parameters()):
        raise ValueError("the batched engine needs a model with parameters")
    if not getattr(model, "batchable", True):
        raise ValueError(f"the batched engine does not train {type(model).__name__} (use --engine sequential)")
    if loop is not None:
        check_batchable_loop(loop.optimizer, loop.max_grad_norm)


def check_batchable_loop(optimizer: str, max_grad_norm: float) -> None:
    """Raise ``ValueError`` for an inner loop the batched engine cannot run (a run's config
    is checked with it before anything is written)."""
    if optimizer not in STACKED_OPTIMIZERS:
        raise ValueError(f"the batched engine has no {optimizer} inner optimizer (use --engine sequential)")
    if max_grad_norm:
        raise ValueError("the batched engine does not clip gradients (use --engine sequential)")


def _has_endpoint_contributions(learner: MetaLearner) -> bool:
    return type(learner).endpoint_contributions is not MetaLearner.endpoint_contributions


# ---------------------------------------------------------------------- the engine
class BatchedEngine:
    """Trains T tasks at once from one init (meta-training) or from T starts (evaluation).

    Args:
        model: the network; used as a structure for ``functional_call`` only (its own
            parameter values are never read). Must pass [`check_batchable()`][leap.engine.batched.check_batchable].
        loop: the inner loop (steps K, batch B, learning rate, optimizer).
        compile: wrap the inner step and Leap's segment in ``torch.compile``.
        max_tasks_per_chunk: most tasks trained at once (None: all of a call).
    """

    def __init__(
        self, model: nn.Module, loop: InnerLoop, *, compile: bool = False, max_tasks_per_chunk: int | None = None
    ) -> None:
        check_batchable(model, loop)
        positive_int("max_tasks_per_chunk", max_tasks_per_chunk, optional=True)
        if loop.precision == "bf16":
            raise ValueError(BF16_NOT_BATCHED)
        self.model = model
        self.loop = loop
        self.names = [n for n, _ in model.named_parameters()]
        self.buffer_names = [n for n, _ in model.named_buffers()]
        self.max_tasks_per_chunk = max_tasks_per_chunk
        self.chunk_limit = max_tasks_per_chunk  # lowered after an out-of-memory error
        self.optimizer = StackedOptimizer(loop.optimizer, loop.lr)
        self.compiled = compile
        self._grad_and_loss = vmap(grad_and_value(self._loss, has_aux=True))
        self._forward = vmap(self._logits)
        # A model may compute T tasks' forward passes itself (``stacked_forward(params, x)``,
        # e.g. leap.models.MLP); one ordinary backward of the summed task losses then gives
        # each task its own gradient (task j's loss depends on its parameters alone), without
        # vmap's and functional_call's per-call overheads, which dominate small models on a
        # CPU (docs/benchmarks.md). Not for models with buffers (the method takes none) and
        # not under torch.compile, which traces the vmap form.
        stacked = getattr(model, "stacked_forward", None)
        self._stacked_forward = stacked if callable(stacked) and not compile and not self.buffer_names else None
        self._step_fn: Callable[..., Any] = self._step
        self._segment_fn: Callable[..., Any] = accumulate_segment_
        if compile:
            # dynamic=False: shapes are fixed per chunk size, and static shapes fuse best.
            self._step_fn = torch.compile(self._step, dynamic=False)
            self._segment_fn = torch.compile(accumulate_segment_, dynamic=False)

    # ------------------------------------------------------------------ public
    def train(
        self,
        tasks: Sequence[TaskDraw],
        learner: MetaLearner | None = None,
        starts: Sequence[Mapping[str, Tensor]] | None = None,
    ) -> list[TaskCurve]:
        """Train every (task, generator) for ``loop.steps`` steps; one ``TaskCurve`` each.

        With a ``learner`` (Leap, Reptile or FOMAML, selecting every parameter of the
        model) all tasks start from θ0 and their meta-gradients are added to the
        learner's accumulators (call ``normalize`` afterwards, as with the hook).
        Without one, task j starts from ``starts[j]`` (a name -> tensor mapping holding
        every parameter and buffer, e.g. a state dict), or from the model's current
        parameters and buffers if ``starts`` is None.
        """
        if learner is not None:
            if starts is not None:
                raise ValueError("give either a learner (tasks start from θ0) or starts, not both")
            self._check_learner(learner)
        if starts is not None and len(starts) != len(tasks):
            raise ValueError(f"{len(starts)} starts for {len(tasks)} tasks")
        curves: list[TaskCurve] = []
        done = 0
        while done < len(tasks):
            size = min(self.chunk_limit or len(tasks), len(tasks) - done)
            chunk = tasks[done : done + size]
            saved = [gen.get_state() for _, gen in chunk]
            try:
                curves += self._train_chunk(chunk, learner, None if starts is None else starts[done : done + size])
            except torch.cuda.OutOfMemoryError:
                if size == 1:
                    raise
                # Nothing of the chunk reached the learner (contributions are added last):
                # rewind its generators and retry with half as many tasks.
                for (_, gen), state in zip(chunk, saved, strict=True):
                    gen.set_state(state)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self.chunk_limit = (size + 1) // 2
                continue
            done += size
        return curves

    # ------------------------------------------------------------------ internals
    def _check_learner(self, learner: MetaLearner) -> None:
        if not (isinstance(learner, Leap) or _has_endpoint_contributions(learner)):
            raise TypeError(f"the batched engine runs Leap and learners whose meta-gradient depends on the "
                            f"endpoints (Reptile, FOMAML), not {type(learner).__name__}")
        if sorted(learner.param_names) != sorted(self.names):
            raise ValueError("the batched engine needs a learner that meta-learns every parameter of the model; "
                             "use the sequential engine for a subset")

    def _logits(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> Tensor:
        # Buffers (running statistics) are updated in place when the model is in training mode.
        with self.loop.precision_context(x.device):
            return functional_call(self.model, {**params, **buffers}, (x,))

    def _loss(
        self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor, y: Tensor
    ) -> tuple[Tensor, Tensor]:
        logits = self._logits(params, buffers, x)
        # The loss in at least float32 (as autocast computes it), float64 models untouched.
        return F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), y), logits

    def _step(
        self, params: list[Tensor], buffers: dict[str, Tensor], state: dict[str, Any], x: Tensor, y: Tensor
    ) -> tuple[list[Tensor], list[Tensor], Tensor, Tensor]:
        """One inner step of T tasks (eq. 1): x (T, B, *input), y (T, B); ``buffers``
        (T, ...) each, updated in place. Returns (θ_{i+1}, ∇f(θ_i), f(θ_i) (T,),
        minibatch error (T,))."""
        if self._stacked_forward is not None:
            grads, loss, logits = self._stacked_grad_and_loss(params, x, y)
        else:
            by_name, (loss, logits) = self._grad_and_loss(self._as_dict(params), buffers, x, y)
            grads = [by_name[n] for n in self.names]
        error = (logits.argmax(-1) != y).float().mean(-1)
        return self.optimizer.update(params, grads, state), grads, loss, error

    def _stacked_grad_and_loss(self, params: list[Tensor], x: Tensor, y: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """(∇f(θ_i) per tensor, f(θ_i) (T,), logits (T, B, C)) through ``stacked_forward``."""
        assert self._stacked_forward is not None
        with torch.enable_grad():
            leaves = [p.detach().requires_grad_() for p in params]
            logits = self._stacked_forward(self._as_dict(leaves), x)
            loss = _task_losses(logits, y)
            grads = torch.autograd.grad(loss.sum(), leaves, allow_unused=True, materialize_grads=True)
        return list(grads), loss.detach(), logits.detach()

    def _task_logits(self, params: list[Tensor], buffers: dict[str, Tensor], x: Tensor) -> Tensor:
        """Logits (T, B, C) of T tasks' models on x (T, B, *input), without gradients."""
        if self._stacked_forward is not None:
            return self._stacked_forward(self._as_dict(params), x)
        return self._forward(self._as_dict(params), buffers, x)

    def _stack_starts(
        self, tasks: Sequence[TaskDraw], learner: MetaLearner | None, starts: Sequence[Mapping[str, Tensor]] | None
    ) -> list[Tensor]:
        t = len(tasks)
        if learner is not None:
            init = dict(learner.named_parameters())
            return [init[n].detach().unsqueeze(0).expand(t, *init[n].shape).clone() for n in self.names]
        if starts is not None:
            missing = [n for n in self.names if any(n not in s for s in starts)]
            if missing:
                raise ValueError(f"starts lack parameter(s) {sorted(set(missing))}")
            return [torch.stack([s[n].detach() for s in starts]) for n in self.names]
        current = dict(self.model.named_parameters())
        return [current[n].detach().unsqueeze(0).expand(t, *current[n].shape).clone() for n in self.names]

    def _stack_buffers(
        self, tasks: Sequence[TaskDraw], learner: MetaLearner | None, starts: Sequence[Mapping[str, Tensor]] | None
    ) -> dict[str, Tensor]:
        """Each task's starting buffers, stacked (T, ...): the learner's initial ones (as
        ``MetaLearner.to`` loads), those in ``starts``, or the model's current ones."""
        t = len(tasks)
        if learner is not None:
            source = learner.initial_buffers()
        elif starts is not None:
            missing = [n for n in self.buffer_names if any(n not in s for s in starts)]
            if missing:
                raise ValueError(f"starts lack buffer(s) {sorted(set(missing))}")
            return {n: torch.stack([s[n].detach() for s in starts]) for n in self.buffer_names}
        else:
            source = dict(self.model.named_buffers())
        return {n: source[n].detach().unsqueeze(0).expand(t, *source[n].shape).clone() for n in self.buffer_names}

    @torch.no_grad()
    def _train_chunk(
        self, tasks: Sequence[TaskDraw], learner: MetaLearner | None, starts: Sequence[Mapping[str, Tensor]] | None
    ) -> list[TaskCurve]:
        self.model.train()  # as train_task: batch statistics in training and in test_metrics
        steps, batch = self.loop.steps, self.loop.batch_size
        params = self._stack_starts(tasks, learner, starts)
        buffers = self._stack_buffers(tasks, learner, starts)
        device = params[0].device
        final = learner.final_loss if learner is not None else None
        stream = draw_stream(tasks, steps + (final == "train"), batch, device)
        state = self.optimizer.init(params)
        is_leap = isinstance(learner, Leap)
        acc = [torch.zeros_like(p) for p in params] if is_leap else []
        segment: dict[str, Any] = {}
        if is_leap:
            assert isinstance(learner, Leap)
            segment = dict(metric=learner.metric, loss_in_manifold=learner.loss_in_manifold,
                           stabilizer=learner.stabilizer, eps=learner.eps)
        prev: tuple[list[Tensor], list[Tensor], Tensor] | None = None
        losses, errors = [], []
        grads: list[Tensor] = []
        for i in range(steps):
            new, grads, loss, error = self._step_fn(params, buffers, state, stream.x[i], stream.y[i])
            new, grads = list(new), list(grads)  # a compiled step may hand back tuples
            if is_leap:
                if prev is not None:  # the segment θ_{i-1} -> θ_i, as Leap.update does
                    self._segment_fn(acc, *prev, params, loss, **segment)
                # θ_i and ∇f(θ_i) are not used again except as the next segment's start
                # (which consumes θ_i in place): no copies.
                prev = (params, grads, loss)
            params = new
            losses.append(loss)
            errors.append(error)

        contributions: list[Tensor] | None = None
        if learner is not None:
            # In the learner's parameter order; its own formula (the engine holds none but eq. 8's call).
            order = {n: j for j, n in enumerate(self.names)}
            if is_leap:
                assert prev is not None
                # f(θ_K) on a fresh training batch, as Leap.end_task
                final_loss = _task_losses(self._task_logits(params, buffers, stream.x[steps]), stream.y[steps])
                self._segment_fn(acc, *prev, params, final_loss, **segment)
                contributions = [acc[order[n]] for n in learner.param_names]
            else:
                contributions = learner.endpoint_contributions([params[order[n]] for n in learner.param_names],
                                                               [grads[order[n]] for n in learner.param_names])

        test_errors, test_losses = self._test_metrics(params, buffers, tasks)
        loss_table, error_table = torch.stack(losses, 1), torch.stack(errors, 1)  # (T, K)
        curves = [TaskCurve(loss_table[j], error_table[j], test_errors[j], test_losses[j]) for j in range(len(tasks))]
        if learner is not None and contributions is not None:
            # Last, so that a chunk that fails (e.g. out of memory) leaves the learner untouched.
            learner.add_task_contributions(contributions)
        return curves

    def _as_dict(self, params: list[Tensor]) -> dict[str, Tensor]:
        return dict(zip(self.names, params, strict=True))

    def _test_metrics(self, params: list[Tensor], buffers: dict[str, Tensor],
                      tasks: Sequence[TaskDraw]) -> tuple[Tensor, Tensor]:
        """(T,) error and (T,) mean loss on each task's whole test set, in eval mode and in
        chunks of ``TEST_CHUNK``, like [`leap.engine.inner.test_metrics()`][leap.engine.inner.test_metrics]."""
        self.model.eval()
        try:
            return self._test_metrics_eval(params, buffers, tasks)
        finally:
            self.model.train()

    def _test_metrics_eval(self, params: list[Tensor], buffers: dict[str, Tensor],
                           tasks: Sequence[TaskDraw]) -> tuple[Tensor, Tensor]:
        sizes = {len(t.test_y) for t, _ in tasks}
        if len(sizes) == 1:
            n = sizes.pop()
            x = torch.stack([t.test_x for t, _ in tasks])
            y = torch.stack([t.test_y for t, _ in tasks])
            wrong = torch.zeros(len(tasks), device=y.device)
            loss = torch.zeros(len(tasks), device=y.device)
            for start in range(0, n, TEST_CHUNK):
                logits = self._task_logits(params, buffers, x[:, start : start + TEST_CHUNK])
                wrong += (logits.argmax(-1) != y[:, start : start + TEST_CHUNK]).sum(-1)
                loss += _task_losses(logits, y[:, start : start + TEST_CHUNK]) * logits.shape[1]
            return wrong / n, loss / n
        errors, losses = [], []
        for j, (task, _) in enumerate(tasks):  # unequal test sets: one task at a time
            own = {**{n: p[j] for n, p in zip(self.names, params, strict=True)},
                   **{n: b[j] for n, b in buffers.items()}}
            wrong = torch.zeros((), device=task.test_y.device)
            loss = torch.zeros((), device=task.test_y.device)
            for start in range(0, len(task.test_y), TEST_CHUNK):
                logits = functional_call(self.model, own, (task.test_x[start : start + TEST_CHUNK],))
                y = task.test_y[start : start + TEST_CHUNK]
                wrong += (logits.argmax(1) != y).sum()
                loss += F.cross_entropy(logits.float(), y, reduction="sum")
            errors.append(wrong / len(task.test_y))
            losses.append(loss / len(task.test_y))
        return torch.stack(errors), torch.stack(losses)


def _task_losses(logits: Tensor, y: Tensor) -> Tensor:
    """Each task's mean cross-entropy: logits (T, B, C), y (T, B) -> (T,), in at least
    float32 as `BatchedEngine._loss()`."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(1)


# ---------------------------------------------------------------------- shared engines
_ENGINES: OrderedDict[tuple[Any, ...], BatchedEngine] = OrderedDict()
_MAX_CACHED = 8


def get_engine(
    model: nn.Module, loop: InnerLoop, *, compile: bool = False, max_tasks_per_chunk: int | None = None
) -> BatchedEngine:
    """A [`BatchedEngine`][leap.engine.batched.BatchedEngine] for models shaped like ``model``, shared between calls.

    Evaluation builds a fresh model each time; reusing the engine of an identical
    architecture keeps ``torch.compile``'s work (and a lowered chunk size) instead of
    compiling again at every validation.
    """
    key = (type(model), repr(model), tuple((n, tuple(p.shape), p.dtype, str(p.device))
                                           for n, p in model.named_parameters()),
           loop, compile, max_tasks_per_chunk)
    engine = _ENGINES.get(key)
    if engine is None:
        engine = BatchedEngine(model, loop, compile=compile, max_tasks_per_chunk=max_tasks_per_chunk)
        _ENGINES[key] = engine
        while len(_ENGINES) > _MAX_CACHED:
            _ENGINES.popitem(last=False)
    else:
        _ENGINES.move_to_end(key)
    return engine


def select_engine(
    model: nn.Module,
    loop: InnerLoop,
    *,
    engine: str = "auto",
    compile: bool | None = None,
    max_tasks_per_chunk: int | None = None,
    batchable: bool = True,
    example: Callable[[], Tensor] | None = None,
) -> BatchedEngine | None:
    """The (shared) batched engine to train ``model``'s tasks with, or None for the
    sequential loop, following [`resolve_engine()`][leap.engine.batched.resolve_engine] on the model's device.
    ``example`` gives one input (called only when ``auto`` on a CPU needs the step's cost).

    ``auto`` falls back to sequential for a model the engine cannot batch; an explicit
    ``"batched"`` raises ``ValueError`` for it instead.
    """
    if choose_engine(model, engine, batch=loop.batch_size, batchable=batchable, precision=loop.precision,
                     example=example) == "sequential":
        return None
    device = next(model.parameters()).device
    if engine == "auto":
        try:
            check_batchable(model, loop)
        except ValueError:
            return None
    return get_engine(model, loop, compile=resolve_compile(compile, device), max_tasks_per_chunk=max_tasks_per_chunk)
