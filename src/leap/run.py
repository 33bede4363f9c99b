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
from leap.tasks import Benchmark, make_benchmark


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


def seeded_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


class MetaTrainer:
    """State of one meta-training run: model, θ0 (in the learner), meta-optimizer, RNG.

    ``step()`` performs one meta-step and returns its metrics (floats, one host sync per
    meta-step). ``init_state()`` is the learned initialization as a state dict.
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
        self.generator = seeded_generator(cfg.seed + 1)
        self.heads: dict[int, dict[str, Tensor]] = {}  # finetuning: one head per source
        self.step_count = 0

    def sample_sources(self) -> list[int]:
        idx = torch.randint(self.cfg.pretrain_tasks, (self.cfg.meta_batch,), generator=self.generator)
        return idx.tolist()

    def step(self) -> dict[str, float]:
        cfg = self.cfg
        start = time.perf_counter()
        curves: list[TaskCurve] = []
        for source in self.sample_sources():
            task = self.benchmark.task("train", source, self.generator)
            curves.append(self._train_one(task))
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

    def _train_one(self, task) -> TaskCurve:
        if self.cfg.method == "maml":
            assert isinstance(self.learner, MAML)
            return maml_task(self.model, task, self.loop, self.generator, self.learner)
        if self.cfg.method == "finetune":
            return self._finetune(task)
        assert self.learner is not None
        self.learner.init_task()
        self.learner.to(self.model)
        return train_task(self.model, task, self.loop, self.generator, self.learner)

    def _finetune(self, task) -> TaskCurve:
        """Multi-headed finetuning: the encoder carries over from task to task, each
        pretraining source keeps its own head."""
        head = self.model.head
        if task.source not in self.heads:
            head.reset_parameters()  # draws from the global RNG, seeded in __init__
        else:
            head.load_state_dict(self.heads[task.source])
        curve = train_task(self.model, task, self.loop, self.generator)
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
    reset_head: bool = False,
    max_tasks: int | None = None,
) -> EvalResult:
    """Train every task of ``split`` for ``loop.steps`` steps from ``init``.

    The tasks, minibatches and fresh heads depend on ``seed`` only, so two inits
    evaluated with one seed see exactly the same data (a paired comparison). AUC is the
    area under the training-error curve normalized by the number of steps (mean error).
    """
    model = benchmark.make_model()
    generator = seeded_generator(seed + 10_000)
    n = benchmark.num_sources(split)
    if max_tasks is not None:
        n = min(n, max_tasks)
    curves = []
    for source in range(n):
        task = benchmark.task(split, source, generator)
        model.load_state_dict(init)
        if reset_head:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + 20_000 + source)
                model.head.reset_parameters()
        curves.append(train_task(model, task, loop, generator))
    train_errors = torch.stack([c.train_error for c in curves])  # (tasks, K)
    return EvalResult(
        test_errors=torch.stack([c.test_error for c in curves]).tolist(),
        aucs=train_errors.mean(1).tolist(),
        curve=train_errors.mean(0).tolist(),
    )


def eval_loop(cfg: RunConfig) -> InnerLoop:
    return InnerLoop(cfg.eval_steps, cfg.eval_batch, cfg.eval_lr, cfg.inner_optimizer)
