"""The inner loop: training one task from a given point, written once.

Every meta-learner (through its hook), multi-headed finetuning, the no-pretraining
baseline and evaluation on held-out tasks all train tasks through [`train_task()`][leap.engine.inner.train_task].
MAML's meta-training is the one exception: its inner loop must stay differentiable and
lives in [`maml_task()`][leap.engine.inner.maml_task].
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leap.engine.precision import PRECISIONS
from leap.learners import MAML, MetaLearner
from leap.tasks.base import Task
from leap.util import checks

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
              "rmsprop": torch.optim.RMSprop}
#: test_metrics' chunk: batch norm uses batch statistics, so the chunking is part of the
#: result and the batched engine evaluates in the same chunks.
TEST_CHUNK = 1000


def make_optimizer(name: str, params, lr: float, **options: float) -> torch.optim.Optimizer:
    """``torch.optim``'s SGD, Adam, AdamW or RMSprop by name: the one factory for inner loops (the
    S_i of eq. 1), meta-optimizers (Algorithm 1, line 13) and the RL agents."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {tuple(OPTIMIZERS)}, got {name!r}")
    return OPTIMIZERS[name](params, lr=lr, **options)


@dataclass(frozen=True)
class InnerLoop:
    """Hyperparameters of one task's learning process (the u_τ of section 2.2)."""

    steps: int
    batch_size: int
    lr: float
    optimizer: str = "sgd"
    precision: str = "fp32"
    max_grad_norm: float = 0.0  # clip each step's gradient to this norm before the step; 0: no clipping

    def __post_init__(self) -> None:
        checks.positive_ints(self, ("steps", "batch_size"))
        checks.positive_number("lr", self.lr)
        if not self.max_grad_norm >= 0:
            raise ValueError(f"max_grad_norm must be >= 0, got {self.max_grad_norm!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {tuple(OPTIMIZERS)}, got {self.optimizer!r}")
        check_precision(self.precision)

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        return make_optimizer(self.optimizer, params, self.lr)

    def precision_context(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The context a task's forward passes run in (see `PRECISIONS`)."""
        return precision_context(self.precision, device)


def check_precision(precision: str, device: torch.device | str | None = None) -> None:
    """Raise ``ValueError`` for an unknown precision, or tf32 off CUDA (``device`` None:
    not known yet)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "tf32" and device is not None and not str(device).startswith("cuda"):  # also for a bad string
        raise ValueError(f"precision tf32 applies to CUDA devices only, not {str(device)!r} (use bf16 or fp32)")


def precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """fp32: nothing; bf16: ``torch.autocast(device.type, torch.bfloat16)`` with batch
    norm in float32; tf32: TF32 matmuls and cuDNN convolutions for the duration (CUDA
    only; raises on a CPU)."""
    check_precision(precision, device)
    if precision == "bf16":
        return _bf16(device)
    if precision == "tf32":
        return _tf32()
    return contextlib.nullcontext()


@contextlib.contextmanager
def _bf16(device: torch.device) -> Iterator[None]:
    # Batch norm is on neither of autocast's lists, so it would run on bfloat16 inputs with
    # float32 weights; its inputs are cast to float32 so that the normalization statistics
    # are computed in float32. (The same mix also fails in backward under torch.func's
    # vmap + grad, "expected scalar type BFloat16 but found Float"; the batched engine now
    # refuses bf16 altogether, see leap.engine.batched.BF16_NOT_BATCHED.)
    hook = torch.nn.modules.module.register_module_forward_pre_hook(_batch_norm_in_float32)
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    finally:
        hook.remove()


def _batch_norm_in_float32(module: nn.Module, args: tuple) -> tuple | None:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and args and args[0].dtype != torch.float32:
        return (args[0].float(), *args[1:])
    return None


@contextlib.contextmanager
def _tf32() -> Iterator[None]:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@dataclass
class TaskCurve:
    """What one task's training produced. Tensors stay on the device (no sync).

    ``train_loss``/``train_error``: (K,) minibatch loss and error before each step;
    ``test_error``/``test_loss``: 0-dim, error and mean loss on the task's test set after
    the K steps (NaN where not measured: MAML's meta-training).
    """

    train_loss: Tensor
    train_error: Tensor
    test_error: Tensor
    test_loss: Tensor = field(default_factory=lambda: torch.tensor(float("nan")))


def task_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy over every prediction: logits (..., C), targets y (...) int64.
    A classifier predicts one label per input, (B, C) and (B,); a language model one per
    position, (B, T, C) and (B, T)."""
    return F.cross_entropy(logits.flatten(0, -2), y.flatten())


def task_error(logits: Tensor, y: Tensor) -> Tensor:
    """Fraction of wrong predictions (0-dim), shapes as `task_loss`."""
    return (logits.argmax(-1) != y).float().mean()


def train_task(
    model: nn.Module,
    task: Task,
    loop: InnerLoop,
    generator: torch.Generator,
    learner: MetaLearner | None = None,
    params: list[Tensor] | None = None,
) -> TaskCurve:
    """Train ``model`` on ``task`` for ``loop.steps`` steps from its current parameters.

    With a ``learner``, the hook protocol is followed: ``update`` after every backward
    and before the optimizer step, then ``end_task`` with the loss at θ_K the learner
    asks for (Leap: a training minibatch; FOMAML: a held-out batch). ``params`` limits
    what the inner optimizer trains (default: all of the model's parameters).
    """
    model.train()
    trained = params if params is not None else list(model.parameters())
    opt = loop.make_optimizer(trained)
    device = task.test_y.device
    # Filled in place, one float per step: keeping each step's 0-dim tensor instead (its own
    # Python object and allocation) cost about 1.2 KiB per step and per curve, measured in
    # isolation, so a 5,000-step task held about 12 MiB for two curves of floats.
    losses = errors = None
    for step in range(loop.steps):
        x, y = task.sample(loop.batch_size, generator)
        with loop.precision_context(device):
            logits = model(x)
            loss = task_loss(logits, y)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        if learner is not None:
            learner.update(loss, model)
        if loop.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(trained, loop.max_grad_norm)
        opt.step()
        # A copy of the value: keeping loss.detach() itself kept about 0.5 MiB per step alive
        # on the transformer of charlm (measured with benchmarks/horizon.py: 896 MiB after
        # 1,000 steps; the mechanism was not traced).
        error = task_error(logits.detach(), y)
        if losses is None:
            losses, errors = loss.new_empty(loop.steps), error.new_empty(loop.steps)
        losses[step] = loss.detach()
        errors[step] = error
    if learner is not None:
        kind = learner.final_loss
        if kind is None:
            learner.end_task(model)
        else:
            sample = task.sample if kind == "train" else task.sample_test
            x, y = sample(loop.batch_size, generator)
            with loop.precision_context(device):
                final_loss = task_loss(model(x), y)
            learner.end_task(model, final_loss)
    with loop.precision_context(device):
        error, test_loss = test_metrics(model, task)
    return TaskCurve(losses, errors, error, test_loss)


def test_error(model: nn.Module, task: Task, chunk: int = TEST_CHUNK) -> Tensor:
    """The error of [`test_metrics()`][leap.engine.inner.test_metrics] alone (0-dim tensor)."""
    return test_metrics(model, task, chunk)[0]


@torch.no_grad()
def test_metrics(model: nn.Module, task: Task, chunk: int = TEST_CHUNK) -> tuple[Tensor, Tensor]:
    """Error and mean loss of ``model`` on the task's whole test set (0-dim tensors, over
    every prediction: one per image, or one per position of a sequence), in eval mode.

    A model whose batch norm keeps running statistics classifies each test image with
    the statistics of the task's training (non-transductive); one without them uses the
    statistics of each chunk of test images (transductive, so the chunking is part of
    the result)."""
    was_training = model.training
    model.eval()
    try:
        wrong = torch.zeros((), device=task.test_y.device)
        loss = torch.zeros((), device=task.test_y.device)
        for start in range(0, len(task.test_y), chunk):
            logits, y = model(task.test_x[start : start + chunk]), task.test_y[start : start + chunk]
            wrong += (logits.argmax(-1) != y).sum()
            loss += F.cross_entropy(logits.flatten(0, -2).float(), y.flatten(), reduction="sum")
    finally:
        model.train(was_training)
    return wrong / task.test_y.numel(), loss / task.test_y.numel()


def maml_task(model: nn.Module, task: Task, loop: InnerLoop, generator: torch.Generator, learner: MAML) -> TaskCurve:
    """MAML meta-training on one task: ``loop.steps`` differentiable SGD steps from θ0,
    then the held-out loss at θ_K back-propagated to θ0 (second order).

    The held-out loss is the authors' code's: the mean loss over the task's whole test
    set, in minibatches of ``loop.batch_size`` (batch statistics, as in training). Their
    code also adds the last inner step's loss into that sum, by reusing a variable; that
    term is a training loss and not part of MAML's objective, so it is left out here."""
    learner.init_task()
    fast = learner.fast_params(model)
    device = task.test_y.device
    losses, errors = [], []
    for _ in range(loop.steps):
        x, y = task.sample(loop.batch_size, generator)
        with loop.precision_context(device):
            logits = learner.forward(model, fast, x)
            loss = task_loss(logits, y)
        fast = learner.adapt(loss, fast)
        losses.append(loss.detach())
        errors.append(task_error(logits.detach(), y))
    chunks = [(task.test_x[i : i + loop.batch_size], task.test_y[i : i + loop.batch_size])
              for i in range(0, len(task.test_y), loop.batch_size)]
    with loop.precision_context(device):
        query = torch.stack([task_loss(learner.forward(model, fast, x), y) for x, y in chunks]).mean()
    learner.end_task(loss=query)
    return TaskCurve(torch.stack(losses), torch.stack(errors), torch.full((), float("nan")))
