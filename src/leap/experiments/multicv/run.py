"""One run on disk (pretraining in the one loop, then evaluation) and a sweep of runs."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from leap.engine.loop import TrainerState, fit
from leap.engine.meta_update import without_accumulated_tasks
from leap.engine.rundir import check_out_dir, lock
from leap.experiments.config import continue_meta_lr, continues_meta_lr
from leap.experiments.multicv.config import METHODS, TABLE_METHODS, MultiCVConfig
from leap.experiments.multicv.methods import METHOD_CLASSES, make_method
from leap.experiments.multicv.report import write_multicv_report
from leap.experiments.multicv.results import read_result, result_source
from leap.experiments.multicv.training import TaskRun, error_rate
from leap.tasks.multicv import MultiCV
from leap.util import distributed
from leap.util.devices import check_device
from leap.util.files import atomic_write_json
from leap.util.seeding import derived_generator, rng_state, set_rng_state


# ---------------------------------------------------------------------- a run on disk
class MultiCVTrainer(TrainerState):
    """Multi-CV's pretraining as a [`leap.engine.loop.Trainer`][leap.engine.loop.Trainer], so
    [`fit()`][leap.engine.loop.fit]
    gives it checkpoints, exact resume, signals and the failed-step stop.

    A meta-step is ``method.pretrain_step`` (Leap leaves the meta-gradient in its hook and
    ``fit`` steps ``meta_optimizer``); pretraining also ends once the meta-batch's
    mean validation error has not improved in ``meta_patience`` meta-steps.
    """

    def __init__(self, cfg: MultiCVConfig, bench: MultiCV) -> None:
        self.cfg = cfg
        self.method = make_method(cfg, bench)
        self.config, self.meta_steps, self.meta_batch = cfg.to_dict(), cfg.meta_steps, cfg.meta_batch
        super().__init__()  # fit's bookkeeping (step_count, stop_requests, stop_signal under torchrun)
        self.best_val_error = math.inf  # the lowest mean validation error of a meta-batch so far
        self.bad_steps = 0  # meta-steps since it last improved
        self.stopped_early = False
        self.pretrain_seconds = 0.0  # over every segment of a resumed run

    @property
    def trains(self) -> bool:
        return self.method.trains

    @property
    def finished(self) -> bool:
        return not self.trains or self.stopped_early or self.step_count >= self.meta_steps

    @property
    def meta_optimizer(self) -> torch.optim.Optimizer | None:
        """Leap's optimizer of the encoder's θ0 (None: the other methods train the model itself)."""
        return self.method.meta_opt

    def meta_parameters(self) -> list[Tensor]:
        learner = self.method.learner
        return list(learner.parameters()) if learner is not None else []

    def meta_lr_at(self, step: int) -> float:
        return self.cfg.meta_lr_at(step)

    def step(self) -> dict[str, Any]:
        start = time.perf_counter()
        batch = self.method.draw(self.step_count)
        runs = self.method.pretrain_step(self.step_count, stop=lambda: bool(self.stop_requests))
        # Each task's (best validation error, mean training error, steps, Leap's path) at its
        # position in the meta-batch, zeros at torchrun's other ranks' positions (float64:
        # exact), summed over the ranks with Leap's meta-gradient and the stop flags in one
        # all-reduce, so that every rank holds the whole table and takes the same meta-patience
        # decision.
        table = torch.zeros(len(batch), 4, dtype=torch.float64)
        for i, _, run in runs:
            table[i] = torch.tensor([run.best_val_error, float(run.train_errors.mean()), run.steps, run.path],
                                    dtype=torch.float64)
        table, control = table.to(self.method.device), self.stop_flags(self.method.device)
        self.meta_gradient_tasks = self.method.end_step([table, control])
        self.agree_on_stop(control)
        val, train, steps, paths = (table[:, k].tolist() for k in range(4))
        valid = sum(math.isfinite(v) for v in val)
        mean_val = sum(val) / len(val)
        if mean_val < self.best_val_error:
            self.best_val_error, self.bad_steps = mean_val, 0
        else:
            self.bad_steps += 1
        self.stopped_early = self.bad_steps >= self.cfg.meta_patience
        seconds = time.perf_counter() - start
        self.pretrain_seconds += seconds
        return {"mean_val_error": mean_val, "mean_train_error": sum(train) / len(train),
                "tasks": [name for _, name, _ in batch], "task_steps": [int(n) for n in steps],
                # Leap's meta-objective (eq. 5) per task and its mean, which Leap lowers
                **({"task_paths": paths, "train_path": sum(paths) / len(paths)} if self.method.learner is not None
                   else {}),
                "valid_tasks": valid, "dropped_tasks": len(batch) - valid, "seconds": seconds}

    def validate(self) -> dict[str, float]:
        return {}  # each task validates itself (early stopping); the meta-batch's mean is in step()'s record

    def init_state(self) -> None:
        return None  # no single initialization (HAT and Progressive Nets have none); result.json has the numbers

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step_count, "consecutive_failures": self.consecutive_failures,
                "best": self.best_val_error, "bad": self.bad_steps, "stopped_early": self.stopped_early,
                "pretrain_seconds": self.pretrain_seconds, "method": self.method.state_dict(), "rng": rng_state(),
                # the tasks of a meta-step stopped between two of its tasks (StepInterrupted)
                "partial": [{"index": i, "name": name, **dataclasses.asdict(run)}
                            for i, name, run in self.method.partial]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step"])
        self.consecutive_failures = int(state.get("consecutive_failures", 0))
        self.best_val_error, self.bad_steps = float(state["best"]), int(state["bad"])
        self.stopped_early, self.pretrain_seconds = bool(state["stopped_early"]), float(state["pretrain_seconds"])
        partial = [(int(p.get("index", i)), p["name"], TaskRun(**{k: v for k, v in p.items()
                                                                   if k not in ("index", "name")}))
                   for i, p in enumerate(state.get("partial", []))]  # "index": absent before torchrun
        method = state["method"]
        if partial and not distributed.is_main():
            # Stopped inside a meta-step (alone) and resumed under torchrun: the tasks done and
            # their meta-gradient (in Leap's accumulators) are rank 0's alone, so that the
            # all-reduce counts them once; the others train what is left of their shares.
            method, partial = {**method, "learner": without_accumulated_tasks(method["learner"])}, []
        self.method.load_state_dict(method)
        self.method.partial = partial
        if "rng" in state:
            set_rng_state(state["rng"])


def check_memory(cfg: MultiCVConfig, bench: MultiCV, pool: list[str]) -> None:
    """Every task's largest minibatch (a batch beyond a training split is the whole split)
    must fit the device's memory, with one Progressive Nets column per dataset trained:
    ``ValueError`` before anything is written, not an out-of-memory kill after config.json
    ([`leap.engine.memory`][leap.engine.memory]'s estimate)."""
    from leap.engine.memory import check_fits, estimate_bytes
    from leap.models import ConvNet

    model, example = ConvNet(in_channels=3, num_classes=10, image_size=32), torch.zeros(1, 3, 32, 32)
    columns = len(pool) + 1 if cfg.method == "progressive" else 1
    for name, batch, option in [(cfg.held_out, cfg.eval_batch, "--eval-batch"),
                                *((p, cfg.task_batch, "--task-batch") for p in pool)]:
        used = min(batch, len(bench.get(name).train_y))
        check_fits(f"training on {name} with minibatches of {used} images ({option} {batch})",
                   columns * estimate_bytes(model, example, used), cfg.device, advice=f"use a smaller {option}")


def run_multicv(cfg: MultiCVConfig, out: str | Path, *, bench: MultiCV | None = None, resume: bool = True,
                overwrite: bool = False, cache_dir: str | Path | None = None,
                log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """Pretrain and evaluate one (held-out dataset, method) into ``out``; under torchrun
    the ranks share pretraining and rank 0 alone evaluates (the others return None).

    Files: ``config.json``; ``metrics.jsonl`` (one record per meta-step);
    ``checkpoints/`` (after every meta-step; the last one marks pretraining done);
    ``result.json`` (the evaluation). With ``resume`` a finished run is returned as is
    and an unfinished one continues from its newest checkpoint; without it, or with
    ``overwrite``, earlier files are replaced. A directory holding a run with another
    configuration is refused ([`leap.engine.rundir.check_out_dir()`][leap.engine.rundir.check_out_dir]) unless
    ``overwrite``.
    Pretraining runs in [`leap.engine.loop.fit()`][leap.engine.loop.fit] (SIGINT/SIGTERM stop it with a
    checkpoint: [`RunStopped`][leap.util.errors.RunStopped]).
    """
    cfg.validate()
    out = Path(out)
    result_path = out / "result.json"
    def same_config(existing: dict[str, Any]) -> bool:
        # The same run, or (resuming) this run with fewer meta-steps (a larger --meta-steps
        # extends it) or with fewer recorded meta learning rate changes (continued_config).
        mine = cfg.to_dict()
        if existing == mine or not resume:
            return existing == mine
        steps, new = existing.get("meta_steps"), cfg.meta_lr_changes
        return (isinstance(steps, int) and steps <= cfg.meta_steps
                and continues_meta_lr(existing.get("meta_lr_changes", []), new)
                and {**existing, "meta_steps": cfg.meta_steps, "meta_lr_changes": new}
                == {**mine, "meta_lr_changes": new})

    check_out_dir(out, same_config, overwrite)
    if resume and not overwrite:
        kept, why = read_result(out, cfg.to_dict())
        if kept is not None:
            log(f"{out}: finished earlier, result.json kept")
            return kept
        if why is not None:
            log(f"{out}: evaluating again: {why}")
    # Everything the run will read, checked before it writes anything: the device, and
    # every dataset it trains on decoded (or read from the cache) and split.
    check_device(cfg.device)
    bench = bench if bench is not None else cfg.benchmark(cache_dir)
    pool = bench.pool(cfg.held_out) if METHOD_CLASSES[cfg.method].trains else []
    for name in [cfg.held_out, *pool]:
        bench.get(name)
    check_memory(cfg, bench, pool)
    if result_path.exists() and distributed.is_main():
        # This run is trained (again, or further): its old evaluation goes first, under the
        # run's lock (fit claims the directory with it).
        lock(out)
        result_path.unlink()

    start = time.perf_counter()
    trainer = MultiCVTrainer(cfg, bench)

    def log_step(record: dict[str, Any]) -> None:
        log(f"{cfg.held_out}/{cfg.method}: meta-step {record['step']}/{cfg.meta_steps} "
            f"val error {100 * record['mean_val_error']:.1f}% ({record['seconds']:.0f} s)")

    # A Multi-CV meta-step trains each task to convergence (minutes): checkpoint after every one.
    fit(trainer, out, resume=resume and not overwrite, overwrite=overwrite, same_run=same_config,
        checkpoint_every=1, on_step=log_step if distributed.is_main() else None,
        log=lambda msg: log(f"{distributed.prefix()}{out}: {msg}"))
    if distributed.active():
        # Pretraining is over: the ranks leave the process group together, and rank 0 evaluates
        # the held-out dataset alone (one task: nothing to split; no collective to time out).
        main = distributed.is_main()
        distributed.barrier()
        distributed.shutdown()
        if not main:
            return None

    result = {**evaluate_held_out(trainer, bench), "total_seconds": time.perf_counter() - start,
              **result_source(out, cfg.to_dict())}
    atomic_write_json(result_path, result)
    log(f"{cfg.held_out}/{cfg.method}: test error {100 * result['test_error']:.1f}%, "
        f"train error {100 * result['train_error']:.1f}%, AUC {100 * result['auc']:.1f} ({result['eval_steps']} steps)")
    return result


def evaluate_held_out(trainer: MultiCVTrainer, bench: MultiCV) -> dict[str, Any]:
    """Table 1's columns for the held-out dataset, trained from what pretraining produced:
    test and training error, the AUC and the training curve, and how the run went."""
    cfg, method = trainer.cfg, trainer.method
    data = bench.get(cfg.held_out)
    t0 = time.perf_counter()
    run, view = method.evaluate(data, derived_generator(cfg.seed, "multicv-eval", cfg.held_out))
    test_error = error_rate(view, data, data.test_x, data.test_y)
    train_error = error_rate(view, data, data.train_x, data.train_y)
    eval_seconds = time.perf_counter() - t0
    curve = run.train_errors
    notes = sorted({note for name in [cfg.held_out, *bench.pool(cfg.held_out)] for note in bench.get(name).notes})
    return {
        "held_out": cfg.held_out, "method": cfg.method, "pool": bench.pool(cfg.held_out),
        "test_error": test_error, "train_error": train_error, "auc": float(curve.mean()),
        "best_val_error": run.best_val_error, "eval_steps": run.steps, "eval_max_steps": run.max_steps,
        "eval_stopped_early": run.stopped_early, "meta_steps": trainer.step_count,
        "meta_stopped_early": trainer.stopped_early, "pretrain_seconds": trainer.pretrain_seconds,
        "eval_seconds": eval_seconds, "sizes": data.sizes(), "notes": notes, "curve": _downsample(curve, 200),
        "parameters": sum(p.numel() for p in view.network.parameters()),
    }


def _downsample(curve: Tensor, points: int) -> list[float]:
    """At most ``points`` means of consecutive blocks of the curve (for plots)."""
    if len(curve) <= points:
        return curve.tolist()
    chunks = torch.tensor_split(curve, points)
    return [float(c.mean()) for c in chunks]


def continued_config(cfg: MultiCVConfig, out: str | Path, meta_lr_given: bool,
                     log: Callable[[str], None] = print) -> MultiCVConfig:
    """The config with which ``leap train --benchmark multicv`` continues the run in
    ``out`` (Multi-CV runs always resume). A run continued with another ``--meta-lr`` (e.g.
    after θ0 diverged) records the change in ``meta_lr_changes``, from its newest
    checkpoint's meta-step on, so that the recorded config trained from scratch gives the
    same run; without ``--meta-lr`` the recorded changes are kept. ``cfg`` as it is for a
    directory that holds no run, or another run (the directory check refuses it)."""
    from leap.util.files import list_checkpoints

    try:
        existing = MultiCVConfig.from_dict(json.loads((Path(out) / "config.json").read_text()))
    except (OSError, ValueError, TypeError):
        return cfg
    if dataclasses.replace(existing, meta_lr=cfg.meta_lr, meta_lr_changes=[], meta_steps=cfg.meta_steps) != cfg:
        return cfg
    continued = dataclasses.replace(existing, meta_steps=cfg.meta_steps)
    if not meta_lr_given:
        return continued if cfg.meta_lr == existing.meta_lr else cfg
    if cfg.meta_lr == existing.meta_lr_at(2**62):
        return continued
    found = list_checkpoints(Path(out) / "checkpoints")
    step = found[-1][0] if found else 0
    changes = continue_meta_lr(existing.meta_lr_changes, step, cfg.meta_lr)
    log(f"continuing {out} with meta learning rate {cfg.meta_lr:g} from meta-step {step} (recorded in config.json "
        "as meta_lr_changes)")
    return dataclasses.replace(continued, meta_lr_changes=changes)


# ---------------------------------------------------------------------- sweep and report
def multicv_sweep(out: str | Path, base: MultiCVConfig, held_outs: Iterable[str] | None = None,
                  methods: Iterable[str] = TABLE_METHODS, seeds: Iterable[int] | None = None, *,
                  cache_dir: str | Path | None = None, overwrite: bool = False,
                  log: Callable[[str], None] = print) -> list[Path]:
    """Every (held-out dataset, method, seed) into ``out/<held-out>/<method>/seed-<S>``,
    one dataset at a time, skipping finished runs and resuming unfinished ones; the
    report is rewritten after every run. ``held_outs`` defaults to the whole pool,
    ``seeds`` to ``base.seed``. Returns the report's paths (`write_multicv_report()`)."""
    out = Path(out)
    bench = base.benchmark(cache_dir)
    held_outs = list(held_outs) if held_outs is not None else list(bench.names)
    methods, seeds = list(methods), list(seeds) if seeds is not None else [base.seed]
    for name in held_outs:
        bench.pool(name)  # checks every name before any run starts
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown Multi-CV method(s) {unknown}; choose from {list(METHODS)}")
    for name in held_outs:
        for m in methods:
            for seed in seeds:
                cfg = dataclasses.replace(base, held_out=name, method=m, seed=seed)
                run_multicv(cfg, out / name / m / f"seed-{seed}", bench=bench, overwrite=overwrite, log=log)
                write_multicv_report(out)
    return write_multicv_report(out)


# Table 4 of the paper: (test %, train %, AUC) per (held-out dataset, method).
