"""Few-shot meta-training (builtin, Omniglot): Algorithm 1's meta-step for every method.

A meta-step reads top to bottom: draw a meta-batch of pretraining tasks, train each
through the shared inner loop with the method's hook (or all at once with the batched
engine); [`leap.engine.loop.fit()`][leap.engine.loop.fit] drives it and lets the meta-optimizer
step on θ0.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from leap.engine import InnerLoop, TaskCurve, maml_task, train_task
from leap.engine.batched import select_engine
from leap.engine.evaluation import evaluate
from leap.engine.inner import make_optimizer, task_error, task_loss
from leap.engine.loop import HookTrainerState
from leap.engine.meta_update import normalize_meta_gradient
from leap.experiments.config import RunConfig
from leap.experiments.fewshot.results import fresh_heads
from leap.experiments.methods import METHODS
from leap.experiments.registry import get_benchmark
from leap.learners import MAML
from leap.models import reset_head
from leap.tasks import Benchmark, Task, make_benchmark
from leap.tasks.base import example_input
from leap.util import distributed
from leap.util.seeding import derived_generator


def build_benchmark(cfg: RunConfig) -> Benchmark:
    kwargs: dict[str, Any] = {"device": cfg.device}
    if cfg.data_dir is not None:
        kwargs["data_dir"] = cfg.data_dir
    if cfg.benchmark == "omniglot":
        kwargs.update(pipeline=cfg.pipeline, bn_eval=cfg.bn_eval)
    return make_benchmark(cfg.benchmark, **kwargs)


def draw_sources(pool: int, count: int, generator: torch.Generator) -> list[int]:
    """``count`` task sources out of ``pool``, without replacement while the pool lasts:
    shuffles of the pool, concatenated (the authors' code), then cut to ``count``."""
    sources: list[int] = []
    while len(sources) < count:
        sources += torch.randperm(pool, generator=generator).tolist()
    return sources[:count]


class MetaTrainer(HookTrainerState):
    """State of one meta-training run: model, θ0 (in the learner), meta-optimizer, RNG.

    ``step()`` trains one meta-step's tasks, leaves their meta-gradient in the learner and
    returns its metrics (floats, one host sync per meta-step); [`leap.engine.loop.fit()`][leap.engine.loop.fit]
    applies the meta-update. ``init_state()`` is the learned initialization as a state dict. All
    randomness after construction comes from generators derived from (seed, meta-step,
    task index), see [`leap.util.seeding`][leap.util.seeding].
    """

    def __init__(self, cfg: RunConfig, benchmark: Benchmark) -> None:
        self.cfg = cfg
        self.method = METHODS[cfg.method]
        self.benchmark = benchmark
        self.config, self.meta_steps, self.meta_batch = cfg.to_dict(), cfg.meta_steps, cfg.meta_batch
        available = benchmark.num_sources("train")
        if cfg.pretrain_tasks > available:
            raise ValueError(f"pretrain_tasks={cfg.pretrain_tasks} but benchmark {cfg.benchmark!r} has {available}")
        torch.manual_seed(cfg.seed)
        self.model = benchmark.make_model()
        self.learner = self.method.learner(self.model, cfg)
        self.meta_opt: torch.optim.Optimizer | None = None
        if self.learner is not None:
            self.meta_opt = make_optimizer(cfg.meta_optimizer, self.learner.parameters(), cfg.meta_lr)
        steps = cfg.maml_steps if self.method.differentiates_inner_loop else cfg.task_steps
        self.loop = InnerLoop(steps, cfg.task_batch, cfg.inner_lr, cfg.inner_optimizer, cfg.precision,
                              cfg.inner_clip or 0.0)
        # The batched engine (all of a meta-batch at once), or None: one task at a time.
        self.engine = select_engine(self.model, self.loop, engine=cfg.engine, compile=cfg.compile,
                                    max_tasks_per_chunk=cfg.max_tasks_per_chunk, batchable=self.method.batched,
                                    example=lambda: example_input(benchmark))
        self.heads: dict[int, dict[str, Tensor]] = {}  # finetuning: one head per source
        # Finetuning where every task's labels mean the same (charlm's bytes): one head, the
        # model's own, trained on every task and part of the initialization.
        self.shared_head = self.method.carries_model and get_benchmark(cfg.benchmark).shared_labels
        super().__init__()  # the bookkeeping fit keeps (step_count, stop_requests, ...)
        if distributed.world_size() > 1 and self.method.carries_model:
            raise ValueError(f"method {cfg.method!r} carries one model from task to task and cannot be split "
                             "over processes; run it in a single process")

    def draw_tasks(self, step: int, indices: Sequence[int] | None = None) -> list[tuple[Task, torch.Generator]]:
        """The meta-batch of meta-step ``step``: sources drawn without replacement from
        the first ``pretrain_tasks`` (`draw_sources()`), each task fixed by the run's
        seed and visited with its own data generator.

        ``indices`` builds only those positions of the meta-batch (a rank's share: task
        construction can be costly, e.g. Omniglot's augmented test sets); each is the same
        task with the same generator as in the full draw."""
        cfg = self.cfg
        pick = derived_generator(cfg.seed, "sources", step)
        sources = draw_sources(cfg.pretrain_tasks, cfg.meta_batch, pick)
        batch = []
        for index in range(cfg.meta_batch) if indices is None else indices:
            generator = derived_generator(cfg.seed, "task", step, index)
            batch.append((self.benchmark.task("train", sources[index], generator, cfg.seed), generator))
        return batch

    def step(self) -> dict[str, float]:
        cfg = self.cfg
        start = time.perf_counter()
        # Under torchrun this rank trains a contiguous share of the meta-batch; alone, all of it.
        mine = distributed.shard(range(cfg.meta_batch))
        draws = self.draw_tasks(self.step_count, mine)
        if self.engine is not None:
            curves = self.engine.train(draws, self.learner)
        elif self.method.carries_model:
            curves = self._finetune(draws)
        else:
            curves = [self._train_one(task, generator) for task, generator in draws]
        # Each task's (mean loss, mean error) at its position in the meta-batch, zeros at the
        # other ranks' positions: summed over ranks (x + 0 is exact), every rank holds the
        # whole table and logs the same means as a single process would.
        device = next(self.model.parameters()).device
        table = torch.zeros(cfg.meta_batch, 2, device=device)
        if curves:
            table[torch.tensor(mine, device=device)] = torch.stack(
                [torch.stack([c.train_loss.mean(), c.train_error.mean()]).float() for c in curves])
        control = self.stop_flags(device)
        if self.learner is not None:
            # One collective for the meta-gradient, the valid count, the metrics and the stop
            # flags; fit's meta_step then applies the meta-update.
            valid = self.meta_gradient_tasks = normalize_meta_gradient(self.learner, [table, control])
        else:
            valid = sum(bool(torch.isfinite(c.train_loss).all()) for c in curves)
        self.agree_on_stop(control)
        loss = _finite_mean(list(table[:, 0]))
        error = _finite_mean(list(table[:, 1]))
        return {
            "train_loss": float(loss),
            "train_error": float(error),
            "valid_tasks": valid,
            "dropped_tasks": cfg.meta_batch - valid,
            "seconds": time.perf_counter() - start,
        }

    def validate(self) -> dict[str, float]:
        """Every ``val_every`` meta-steps: the current θ0 evaluated on the validation split."""
        cfg = self.cfg
        if not cfg.val_every or self.step_count % cfg.val_every:
            return {}
        val = evaluate(self.benchmark, self.init_state(), eval_loop(cfg), cfg.seed, "val", fresh_heads(cfg),
                       **engine_options(cfg))
        return {"val_error": val.test_error, "val_auc": val.auc}

    def _train_one(self, task: Task, generator: torch.Generator) -> TaskCurve:
        if self.method.differentiates_inner_loop:
            assert isinstance(self.learner, MAML)
            return maml_task(self.model, task, self.loop, generator, self.learner)
        assert self.learner is not None
        self.learner.init_task()
        self.learner.to(self.model)
        return train_task(self.model, task, self.loop, generator, self.learner)

    def _finetune(self, draws: list[tuple[Task, torch.Generator]]) -> list[TaskCurve]:
        """One meta-step of multi-headed finetuning, as the authors' code runs it: the
        encoder carries over from meta-step to meta-step, each pretraining source keeps
        its own head (its labels are fixed, so the head always matches them), and the
        K minibatches of every task of the meta-batch are shuffled together and trained
        one after another with one optimizer over the encoder and the heads. Where every
        task's labels mean the same (``shared_labels``, charlm), it is plain multi-task
        pretraining instead: one head, the model's own, for every task.

        The model needs ``encoder`` and ``head`` submodules (the project's models have
        them). Returns each task's curve in its own step order (test error not measured).
        """
        model, cfg = self.model, self.cfg
        heads: dict[int, nn.Module] = {0: model.head} if self.shared_head else {}
        for task, _ in draws:
            if self.head_key(task) in heads:
                continue
            if task.source in self.heads:
                model.head.load_state_dict(self.heads[task.source])
            else:
                reset_head(model, cfg.seed, "finetune-head", task.source)
            heads[task.source] = copy.deepcopy(model.head)
        before = {k: v.detach().clone() for k, v in model.state_dict().items()}
        encoder = [p for n, p in model.named_parameters() if not n.startswith("head.")]
        trained = encoder + [p for h in heads.values() for p in h.parameters()]
        opt = self.loop.make_optimizer(trained)
        order = torch.randperm(len(draws) * self.loop.steps,
                               generator=derived_generator(cfg.seed, "finetune-order", self.step_count))
        # (tasks, K) curves filled in place, as train_task's (one kept 0-dim tensor per step
        # costs about 1.2 KiB); filled[j]: the steps task j has taken so far.
        losses = errors = None
        filled = [0] * len(draws)
        model.train()
        for j in (order % len(draws)).tolist():
            task, generator = draws[j]
            x, y = task.sample(self.loop.batch_size, generator)
            logits = heads[self.head_key(task)](model.encoder(x))
            loss = task_loss(logits, y)
            opt.zero_grad()
            loss.backward()
            if self.loop.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(trained, self.loop.max_grad_norm)
            opt.step()
            error = task_error(logits.detach(), y)
            if losses is None:
                losses = loss.new_empty(len(draws), self.loop.steps)
                errors = error.new_empty(len(draws), self.loop.steps)
            losses[j, filled[j]], errors[j, filled[j]] = loss.detach(), error
            filled[j] += 1
        nan = torch.full((), float("nan"))
        curves = [TaskCurve(lo, er, nan) for lo, er in zip(losses, errors, strict=True)]
        if not all(bool(torch.isfinite(p).all()) for p in trained):
            # A diverged meta-step must not poison the shared encoder: undo it (one sync).
            model.load_state_dict(before)
            return [TaskCurve(torch.full_like(c.train_loss, float("nan")), c.train_error, nan) for c in curves]
        if not self.shared_head:  # the shared head is the model's, in its state and checkpoints
            for source, head in heads.items():
                self.heads[source] = {k: v.detach().clone() for k, v in head.state_dict().items()}
        return curves

    def head_key(self, task: Task) -> int:
        """Finetuning: which head trains on ``task`` (its source's, or the one shared head)."""
        return 0 if self.shared_head else task.source

    def init_state(self) -> dict[str, Tensor]:
        """The learned initialization (the model's full state dict with θ0 loaded)."""
        if self.learner is not None:
            self.learner.to(self.model)
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    @property
    def trains(self) -> bool:
        return self.method.meta_trains

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue bit for bit; finetuning adds its heads."""
        return {**super().state_dict(), "heads": {int(k): v for k, v in self.heads.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.heads = {int(k): v for k, v in state.get("heads", {}).items()}


def _finite_mean(values: list[Tensor]) -> float:
    """Mean of the finite entries (NaN if none): failed tasks do not hide the others."""
    stacked = torch.stack(values).float()
    return float(stacked[torch.isfinite(stacked)].mean()) if bool(torch.isfinite(stacked).any()) else float("nan")


def eval_loop(cfg: RunConfig) -> InnerLoop:
    return InnerLoop(cfg.eval_steps, cfg.eval_batch, cfg.eval_lr, cfg.inner_optimizer, cfg.precision,
                     cfg.inner_clip or 0.0)


def engine_options(cfg: RunConfig) -> dict[str, Any]:
    """[`evaluate()`][leap.engine.evaluation.evaluate]'s keyword arguments choosing the task engine, from a run's
    config."""
    return {"engine": cfg.engine, "compile": cfg.compile, "max_tasks_per_chunk": cfg.max_tasks_per_chunk}
