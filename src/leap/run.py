"""Meta-training and evaluation runs: the loop over meta-steps (Algorithm 1) for every method.

A run reads top to bottom: build the benchmark and model from the config, then per
meta-step sample a meta-batch of pretraining tasks, train each through the shared inner
loop with the method's hook, and let the meta-optimizer step on θ0.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from leap.config import RunConfig
from leap.engine import InnerLoop, TaskCurve, maml_task, train_task
from leap.learners import FOMAML, MAML, Leap, MetaLearner, Reptile
from leap.seeding import derive_seed, derived_generator
from leap.tasks import Benchmark, Task, make_benchmark


def make_learner(cfg: RunConfig, model: nn.Module) -> MetaLearner | None:
    """The hook of ``cfg.method`` (None for finetuning and no pretraining)."""
    if cfg.method == "leap":
        return Leap(model, metric=cfg.metric, loss_in_manifold=cfg.loss_in_manifold, stabilizer=cfg.stabilizer)
    if cfg.method == "reptile":
        return Reptile(model)
    if cfg.method == "fomaml":
        return FOMAML(model)
    if cfg.method == "maml":
        return MAML(model, inner_lr=cfg.inner_lr)
    return None


def fresh_head(method: str) -> bool:
    """Whether evaluating this method's init re-initializes the model's ``head``."""
    return method == "finetune"


def build_benchmark(cfg: RunConfig) -> Benchmark:
    kwargs: dict[str, Any] = {"device": cfg.device}
    if cfg.data_dir is not None:
        kwargs["data_dir"] = cfg.data_dir
    return make_benchmark(cfg.benchmark, **kwargs)


class MetaTrainer:
    """State of one meta-training run: model, θ0 (in the learner), meta-optimizer, RNG.

    ``step()`` performs one meta-step and returns its metrics (floats, one host sync per
    meta-step). ``init_state()`` is the learned initialization as a state dict. All
    randomness after construction comes from generators derived from (seed, meta-step,
    task index), see :mod:`leap.seeding`.
    """

    def __init__(self, cfg: RunConfig, benchmark: Benchmark) -> None:
        self.cfg = cfg
        self.benchmark = benchmark
        available = benchmark.num_sources("train")
        if cfg.pretrain_tasks > available:
            raise ValueError(f"pretrain_tasks={cfg.pretrain_tasks} but benchmark {cfg.benchmark!r} has {available}")
        torch.manual_seed(cfg.seed)
        self.model = benchmark.make_model()
        self.learner = make_learner(cfg, self.model)
        self.meta_opt: torch.optim.Optimizer | None = None
        if self.learner is not None:
            cls = torch.optim.Adam if cfg.meta_optimizer == "adam" else torch.optim.SGD
            self.meta_opt = cls(self.learner.parameters(), lr=cfg.meta_lr)
        steps = cfg.maml_steps if cfg.method == "maml" else cfg.task_steps
        self.loop = InnerLoop(steps, cfg.task_batch, cfg.inner_lr, cfg.inner_optimizer)
        self.heads: dict[int, dict[str, Tensor]] = {}  # finetuning: one head per source
        self.step_count = 0

    def draw_tasks(self, step: int) -> list[tuple[Task, torch.Generator]]:
        """The meta-batch of meta-step ``step``: tasks drawn uniformly (with replacement)
        from the first ``pretrain_tasks`` sources, each with its own data generator."""
        cfg = self.cfg
        pick = derived_generator(cfg.seed, "sources", step)
        sources = torch.randint(cfg.pretrain_tasks, (cfg.meta_batch,), generator=pick).tolist()
        batch = []
        for index, source in enumerate(sources):
            generator = derived_generator(cfg.seed, "task", step, index)
            batch.append((self.benchmark.task("train", source, generator), generator))
        return batch

    def step(self) -> dict[str, float]:
        cfg = self.cfg
        start = time.perf_counter()
        curves = [self._train_one(task, generator) for task, generator in self.draw_tasks(self.step_count)]
        valid = cfg.meta_batch
        if self.learner is not None:
            assert self.meta_opt is not None
            valid_tasks = int(self.learner.normalize().item())
            if valid_tasks > 0:
                self.meta_opt.step()
            self.meta_opt.zero_grad()
            valid = valid_tasks
        self.step_count += 1
        loss = torch.stack([c.train_loss.mean() for c in curves]).mean()
        error = torch.stack([c.train_error.mean() for c in curves]).mean()
        return {
            "step": self.step_count,
            "train_loss": float(loss),
            "train_error": float(error),
            "valid_tasks": valid,
            "dropped_tasks": cfg.meta_batch - valid,
            "seconds": time.perf_counter() - start,
        }

    def _train_one(self, task: Task, generator: torch.Generator) -> TaskCurve:
        if self.cfg.method == "maml":
            assert isinstance(self.learner, MAML)
            return maml_task(self.model, task, self.loop, generator, self.learner)
        if self.cfg.method == "finetune":
            return self._finetune(task, generator)
        assert self.learner is not None
        self.learner.init_task()
        self.learner.to(self.model)
        return train_task(self.model, task, self.loop, generator, self.learner)

    def _finetune(self, task: Task, generator: torch.Generator) -> TaskCurve:
        """Multi-headed finetuning: the encoder carries over from task to task, each
        pretraining source keeps its own head (the task drawn first from a source
        defines it; later draws of that source reuse its head)."""
        head = self.model.head
        if task.source not in self.heads:
            reset_head(self.model, self.cfg.seed, "finetune-head", task.source)
        else:
            head.load_state_dict(self.heads[task.source])
        curve = train_task(self.model, task, self.loop, generator)
        self.heads[task.source] = {k: v.detach().clone() for k, v in head.state_dict().items()}
        return curve

    def init_state(self) -> dict[str, Tensor]:
        """The learned initialization (the model's full state dict with θ0 loaded)."""
        if self.learner is not None:
            self.learner.to(self.model)
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    @property
    def trains(self) -> bool:
        return self.cfg.method != "none"


@dataclass
class EvalResult:
    """Evaluation of an init on held-out tasks: per-task test errors and AUCs, and the
    mean training-error curve (K,)."""

    test_errors: list[float]
    aucs: list[float]
    curve: list[float]

    @property
    def test_error(self) -> float:
        return sum(self.test_errors) / len(self.test_errors)

    @property
    def test_error_std(self) -> float:
        m = self.test_error
        return math.sqrt(sum((e - m) ** 2 for e in self.test_errors) / len(self.test_errors))

    @property
    def auc(self) -> float:
        return sum(self.aucs) / len(self.aucs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "test_error": self.test_error, "test_error_std": self.test_error_std, "auc": self.auc,
            "test_errors": self.test_errors, "aucs": self.aucs, "curve": self.curve,
        }


def evaluate(
    benchmark: Benchmark,
    init: dict[str, Tensor],
    loop: InnerLoop,
    seed: int,
    split: str = "test",
    fresh_heads: bool = False,
    max_tasks: int | None = None,
) -> EvalResult:
    """Train every task of ``split`` for ``loop.steps`` steps from ``init``.

    The tasks, minibatches and fresh heads depend on ``seed`` only, so two inits
    evaluated with one seed see exactly the same data (a paired comparison). AUC is the
    area under the training-error curve normalized by the number of steps (mean error).
    """
    model = benchmark.make_model()
    n = benchmark.num_sources(split)
    if max_tasks is not None:
        n = min(n, max_tasks)
    curves = []
    for source in range(n):
        generator = derived_generator(seed, "eval", split, source)
        task = benchmark.task(split, source, generator)
        model.load_state_dict(init)
        if fresh_heads:
            reset_head(model, seed, "eval-head", split, source)
        curves.append(train_task(model, task, loop, generator))
    train_errors = torch.stack([c.train_error for c in curves])  # (tasks, K)
    return EvalResult(
        test_errors=torch.stack([c.test_error for c in curves]).tolist(),
        aucs=train_errors.mean(1).tolist(),
        curve=train_errors.mean(0).tolist(),
    )


def reset_head(model: nn.Module, *seed_parts: object) -> None:
    """Re-initialize ``model.head`` with its default init, seeded by ``seed_parts``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(*seed_parts))
        model.head.reset_parameters()


def eval_loop(cfg: RunConfig) -> InnerLoop:
    return InnerLoop(cfg.eval_steps, cfg.eval_batch, cfg.eval_lr, cfg.inner_optimizer)
