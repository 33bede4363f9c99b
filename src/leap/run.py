"""Meta-training and evaluation runs: the loop over meta-steps (Algorithm 1) for every method.

A run reads top to bottom: build the benchmark and model from the config, then per
meta-step sample a meta-batch of pretraining tasks, train each through the shared inner
loop with the method's hook, and let the meta-optimizer step on θ0.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import random
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leap import distributed
from leap.checkpoint import (
    atomic_write_bytes,
    checkpoint_path,
    list_checkpoints,
    load_latest_checkpoint,
    save_checkpoint,
    save_init,
)
from leap.config import RunConfig
from leap.engine import InnerLoop, TaskCurve, maml_task, train_task
from leap.engine.batched import select_engine
from leap.learners import FOMAML, MAML, Leap, MetaLearner, Reptile
from leap.models import reset_running_stats
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
        # The batched engine (all of a meta-batch at once), or None: one task at a time.
        self.engine = select_engine(self.model, self.loop, engine=cfg.engine, compile=cfg.compile,
                                    max_tasks_per_chunk=cfg.max_tasks_per_chunk, method=cfg.method)
        self.heads: dict[int, dict[str, Tensor]] = {}  # finetuning: one head per source
        self.step_count = 0
        self.consecutive_failures = 0  # meta-steps in a row in which every task failed
        if distributed.world_size() > 1 and self.learner is None and self.trains:
            raise ValueError(f"method {cfg.method!r} carries one model from task to task and cannot be split "
                             "over processes; run it in a single process")
        # Signals this process received (fit's handlers append), and the one the ranks agreed
        # to stop on after the latest step (None: go on). Under torchrun the flags travel in
        # the meta-gradient's all-reduce, so every rank stops after the same meta-step.
        self.stop_requests: list[int] = []
        self.stop_signal: int | None = None

    def draw_tasks(self, step: int, indices: Sequence[int] | None = None) -> list[tuple[Task, torch.Generator]]:
        """The meta-batch of meta-step ``step``: sources drawn without replacement from
        the first ``pretrain_tasks`` (:func:`draw_sources`), each task fixed by the run's
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
        elif cfg.method == "finetune":
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
        control = torch.tensor([float(s in self.stop_requests) for s in STOP_SIGNALS], device=device)
        valid = cfg.meta_batch
        if self.learner is not None:
            assert self.meta_opt is not None

            def reduce(tensors: list[Tensor]) -> None:
                # One collective for the meta-gradient, the valid count, the metrics and the stop flags.
                distributed.all_reduce_sum([*tensors, table, control])

            valid_tasks = int(self.learner.normalize(reduce if distributed.active() else None).item())
            if valid_tasks > 0:
                self.meta_opt.step()
            self.meta_opt.zero_grad()
            valid = valid_tasks
        else:
            valid = sum(bool(torch.isfinite(c.train_loss).all()) for c in curves)
        self.step_count += 1
        self.consecutive_failures = 0 if valid > 0 else self.consecutive_failures + 1
        if distributed.active():
            agreed = [s for s, n in zip(STOP_SIGNALS, control.tolist(), strict=True) if n > 0]
            self.stop_signal = agreed[0] if agreed else None
        else:
            self.stop_signal = self.stop_requests[0] if self.stop_requests else None
        loss = _finite_mean(list(table[:, 0]))
        error = _finite_mean(list(table[:, 1]))
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
        assert self.learner is not None
        self.learner.init_task()
        self.learner.to(self.model)
        return train_task(self.model, task, self.loop, generator, self.learner)

    def _finetune(self, draws: list[tuple[Task, torch.Generator]]) -> list[TaskCurve]:
        """One meta-step of multi-headed finetuning, as the authors' code runs it: the
        encoder carries over from meta-step to meta-step, each pretraining source keeps
        its own head (its labels are fixed, so the head always matches them), and the
        K minibatches of every task of the meta-batch are shuffled together and trained
        one after another with one optimizer over the encoder and the heads.

        The model needs ``encoder`` and ``head`` submodules (the project's models have
        them). Returns each task's curve in its own step order (test error not measured).
        """
        model, cfg = self.model, self.cfg
        heads: dict[int, nn.Module] = {}
        for task, _ in draws:
            if task.source in heads:
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
        losses: list[list[Tensor]] = [[] for _ in draws]
        errors: list[list[Tensor]] = [[] for _ in draws]
        model.train()
        for j in (order % len(draws)).tolist():
            task, generator = draws[j]
            x, y = task.sample(self.loop.batch_size, generator)
            logits = heads[task.source](model.encoder(x))
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[j].append(loss.detach())
            errors[j].append((logits.detach().argmax(1) != y).float().mean())
        nan = torch.full((), float("nan"))
        curves = [TaskCurve(torch.stack(lo), torch.stack(er), nan) for lo, er in zip(losses, errors, strict=True)]
        if not all(bool(torch.isfinite(p).all()) for p in trained):
            # A diverged meta-step must not poison the shared encoder: undo it (one sync).
            model.load_state_dict(before)
            return [TaskCurve(torch.full_like(c.train_loss, float("nan")), c.train_error, nan) for c in curves]
        for source, head in heads.items():
            self.heads[source] = {k: v.detach().clone() for k, v in head.state_dict().items()}
        return curves

    def init_state(self) -> dict[str, Tensor]:
        """The learned initialization (the model's full state dict with θ0 loaded)."""
        if self.learner is not None:
            self.learner.to(self.model)
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    @property
    def trains(self) -> bool:
        return self.cfg.method != "none"

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue bit for bit (loadable with
        ``torch.load(weights_only=True)``)."""
        return {
            "step": self.step_count,
            "consecutive_failures": self.consecutive_failures,
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "learner": self.learner.state_dict() if self.learner is not None else {},
            "meta_opt": self.meta_opt.state_dict() if self.meta_opt is not None else {},
            "heads": {int(k): v for k, v in self.heads.items()},
            "rng": rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step"])
        self.consecutive_failures = int(state.get("consecutive_failures", 0))
        self.model.load_state_dict(state["model"])
        if self.learner is not None:
            self.learner.load_state_dict(state["learner"])
        if self.meta_opt is not None:
            self.meta_opt.load_state_dict(state["meta_opt"])
        self.heads = {int(k): v for k, v in state.get("heads", {}).items()}
        set_rng_state(state["rng"])


#: Signals that stop meta-training after the meta-step in flight (with a checkpoint).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _finite_mean(values: list[Tensor]) -> float:
    """Mean of the finite entries (NaN if none): failed tasks do not hide the others."""
    stacked = torch.stack(values).float()
    return float(stacked[torch.isfinite(stacked)].mean()) if bool(torch.isfinite(stacked).any()) else float("nan")


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) global RNG states, as plain types and tensors.

    The run's own sampling uses derived generators (:mod:`leap.seeding`); these global
    states are saved as well so that user code drawing from them resumes exactly too.
    """
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"key": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["key"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


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
    engine: str = "auto",
    compile: bool | None = None,
    max_tasks_per_chunk: int | None = None,
) -> EvalResult:
    """Train every task of ``split`` for ``loop.steps`` steps from ``init``.

    The tasks, minibatches and fresh heads depend on ``seed`` only, so two inits
    evaluated with one seed see exactly the same data (a paired comparison). AUC is the
    area under the training-error curve normalized by the number of steps (mean error).

    Under torchrun every rank must call this: each trains a contiguous share of the
    tasks and all ranks return the same, complete result.

    ``engine``, ``compile`` and ``max_tasks_per_chunk`` choose how the tasks are trained
    (:func:`leap.engine.batched.select_engine`); the result is the same up to rounding.
    """
    model = benchmark.make_model()
    n = benchmark.num_sources(split)
    if max_tasks is not None:
        n = min(n, max_tasks)
    # Row per task: test error, then the training-error curve (K,). Other ranks' rows stay
    # zero here; summing over ranks (x + 0 is exact) gives every rank the whole table.
    table = torch.zeros(n, 1 + loop.steps, device=next(model.parameters()).device)
    batched = select_engine(model, loop, engine=engine, compile=compile, max_tasks_per_chunk=max_tasks_per_chunk)
    pending = []  # batched: (source, (task, generator), starting parameters), trained together below
    for source in distributed.shard(range(n)):
        generator = derived_generator(seed, "eval", split, source)
        task = benchmark.task(split, source, generator, seed)
        model.load_state_dict(init)
        reset_running_stats(model)  # batch norm's statistics come from this task's training alone
        if fresh_heads:
            reset_head(model, seed, "eval-head", split, source)
        if batched is not None:
            pending.append((source, (task, generator), {k: v.detach().clone() for k, v in model.state_dict().items()}))
            continue
        curve = train_task(model, task, loop, generator)
        table[source, 0] = curve.test_error
        table[source, 1:] = curve.train_error
    if batched is not None and pending:
        curves = batched.train([draw for _, draw, _ in pending], starts=[start for _, _, start in pending])
        for (source, _, _), curve in zip(pending, curves, strict=True):
            table[source, 0] = curve.test_error
            table[source, 1:] = curve.train_error
    distributed.all_reduce_sum([table])
    train_errors = table[:, 1:].contiguous()  # (tasks, K)
    return EvalResult(
        test_errors=table[:, 0].tolist(),
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


def engine_options(cfg: RunConfig) -> dict[str, Any]:
    """:func:`evaluate`'s keyword arguments choosing the task engine, from a run's config."""
    return {"engine": cfg.engine, "compile": cfg.compile, "max_tasks_per_chunk": cfg.max_tasks_per_chunk}


# ---------------------------------------------------------------------- a run on disk
class RunStopped(Exception):
    """Meta-training stopped early (signal or repeated failures); a checkpoint was written."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fit(
    trainer: MetaTrainer,
    out: Path,
    *,
    resume: bool = False,
    checkpoint_every: int = 0,
    max_failed_steps: int = 10,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Meta-train into ``out`` (metrics.jsonl, checkpoints/, init.safetensors).

    Checkpoints are written every ``checkpoint_every`` meta-steps, on SIGINT/SIGTERM
    (after the meta-step in flight) and when ``max_failed_steps`` meta-steps in a row
    lost every task. With ``resume`` the newest readable checkpoint is loaded and
    metrics.jsonl is cut back to its step, so the finished run is identical to an
    uninterrupted one.

    Under torchrun every rank calls this; only rank 0 reads checkpoints (and sends the
    state to the others) and writes files.
    """
    cfg = trainer.cfg
    ckpt_dir = out / "checkpoints"
    metrics_path = out / "metrics.jsonl"
    main = distributed.is_main()
    if distributed.active():
        distributed.check_same(json.dumps(cfg.to_dict(), sort_keys=True), "run configuration")
        share = distributed.shard(range(cfg.meta_batch))
        tasks = f"tasks {share[0]}..{share[-1]}" if share else "no task"
        log(f"trains {tasks} of each meta-batch of {cfg.meta_batch}"
            + (f"; writes {out}" if main else "; writes nothing"))

    history: list[dict[str, Any]] = []  # the metrics written so far, saved in every checkpoint

    def checkpoint(step: int) -> Path:
        # Every rank holds the same state: rank 0 alone writes it.
        if not main:
            return checkpoint_path(ckpt_dir, step)
        return save_checkpoint(ckpt_dir, step, {**trainer.state_dict(), "metrics": history})

    loaded = None
    if resume:
        # Rank 0 reads the newest checkpoint and sends it to the others, so all ranks
        # continue from one state whether or not they share a file system.
        found = load_latest_checkpoint(ckpt_dir) if main else None
        loaded = distributed.broadcast_from_main(None if found is None else (found[0], str(found[1])))
    if loaded is not None:
        state, path = loaded
        trainer.load_state_dict(state)
        log(f"resuming from {path} (meta-step {trainer.step_count})")
    elif not resume and main:
        for _, old in list_checkpoints(ckpt_dir):
            old.unlink()
    if main:
        if loaded is not None and "metrics" in loaded[0]:
            # The checkpoint's own copy wins: metrics.jsonl may be lost, cut or ahead of it.
            history.extend(loaded[0]["metrics"])
            atomic_write_bytes(metrics_path, "".join(json.dumps(r) + "\n" for r in history).encode())
        else:
            truncate_metrics(metrics_path, trainer.step_count)
            if metrics_path.exists():
                history.extend(json.loads(line) for line in metrics_path.read_text().splitlines())

    stop = trainer.stop_requests
    stop.clear()
    handlers = {}
    for sig in STOP_SIGNALS:
        try:
            handlers[sig] = signal.signal(sig, lambda signum, frame: stop.append(signum))
        except ValueError:  # not the main thread: leave signals alone
            pass
    start = time.perf_counter()
    try:
        with metrics_path.open("a") if main else contextlib.nullcontext() as metrics:
            while trainer.trains and trainer.step_count < cfg.meta_steps:
                record = trainer.step()
                if cfg.val_every and record["step"] % cfg.val_every == 0:
                    val = evaluate(trainer.benchmark, trainer.init_state(), eval_loop(cfg), cfg.seed, "val",
                                   fresh_head(cfg.method), **engine_options(cfg))
                    record.update(val_error=val.test_error, val_auc=val.auc)
                history.append(record)
                if metrics is not None:
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                if record["dropped_tasks"] and main:
                    log(f"warning: meta-step {record['step']}: dropped {record['dropped_tasks']} of "
                        f"{cfg.meta_batch} tasks (non-finite loss or gradient)")
                if on_step is not None:
                    on_step(record)
                step = trainer.step_count
                if trainer.consecutive_failures >= max_failed_steps:
                    path = checkpoint(step)
                    raise RunStopped(
                        f"every task failed (non-finite) in {trainer.consecutive_failures} consecutive meta-steps; "
                        f"stopped at meta-step {step}, checkpoint {path}; lower the learning rates and resume", 1)
                # Alone, any signal so far counts; under torchrun, the one the ranks agreed on
                # in this step's all-reduce (so that all stop after the same meta-step).
                stop_signal = trainer.stop_signal if distributed.active() else (stop[0] if stop else None)
                if stop_signal is not None:
                    path = checkpoint(step)
                    raise RunStopped(f"interrupted at meta-step {step}; checkpoint {path}; continue with --resume",
                                     128 + stop_signal)
                if checkpoint_every and step % checkpoint_every == 0 and step < cfg.meta_steps:
                    checkpoint(step)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    # No safetensors metadata: its key order is not stable across processes, and
    # config.json beside the file already says what produced it.
    if main:
        save_init(out / "init.safetensors", trainer.init_state())
    if trainer.trains:
        checkpoint(trainer.step_count)
    return {"train_seconds": time.perf_counter() - start}


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the records of meta-steps 1..step (drops what a killed run wrote after its
    last checkpoint, and a partial last line)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            break
        if record.get("step", 0) <= step:
            kept.append(line)
    atomic_write_bytes(path, "".join(line + "\n" for line in kept).encode())
