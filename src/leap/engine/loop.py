"""The one meta-training loop: ``fit`` drives any [`Trainer`][leap.engine.loop.Trainer] into a run directory.

``fit`` owns what every experiment needs and none should write twice: metrics.jsonl,
periodic checkpoints, exact resume, SIGINT/SIGTERM (stop after the meta-step in flight,
with a checkpoint), the stop after repeated failed meta-steps, torchrun's rules (rank 0
reads and writes files, the ranks stop after the same meta-step), and the meta-update with
its bookkeeping ([`meta_step()`][leap.engine.loop.meta_step]: the meta learning rate's
schedule, the roll-back of a θ0 made non-finite). An experiment supplies a trainer: the
task work of a meta-step, its meta-optimizer and θ0, validation, its state.
"""

from __future__ import annotations

import contextlib
import copy
import json
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from leap.engine.memory import peak_resident_mib, reset_peak_resident
from leap.engine.meta_update import meta_update
from leap.engine.rundir import RunMatcher, begin_run, meta_training_seconds
from leap.learners import MetaLearner
from leap.util import distributed
from leap.util.errors import CorruptFileError, RunStopped, UsageError
from leap.util.files import (
    atomic_write_bytes,
    checkpoint_path,
    list_checkpoints,
    load_latest_checkpoint,
    non_finite,
    save_checkpoint,
    save_init,
)
from leap.util.seeding import rng_state, set_rng_state
from leap.util.tensorboard import TensorBoardLog

#: Signals that stop meta-training after the meta-step in flight (with a checkpoint).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Trainer(Protocol):
    """What [`fit()`][leap.engine.loop.fit] drives: one experiment's meta-training state.

    ``step()`` does the task work of meta-step ``step_count`` (0-based; Algorithm 1, lines
    2-12): it trains the meta-batch's tasks, leaves their meta-gradient normalized in the
    hook ([`normalize_meta_gradient()`][leap.engine.meta_update.normalize_meta_gradient],
    which sums it over torchrun's ranks), sets ``meta_gradient_tasks`` and returns the
    step's metrics, which must include ``valid_tasks`` and ``dropped_tasks`` (not ``step``).
    It neither steps the meta-optimizer nor counts the step: [`meta_step()`][leap.engine.loop.meta_step]
    (which ``fit`` calls) then updates θ0 (``meta_parameters()`` by ``meta_optimizer`` at
    ``meta_lr_at(step)``, rolled back if θ0 became non-finite; no update when
    ``meta_optimizer`` is None) and keeps the bookkeeping ([`TrainerState`][leap.engine.loop.TrainerState]:
    ``step_count``, ``consecutive_failures``). ``stop_requests`` collects the signals this
    process received (``fit`` installs the handlers and, in a single process, stops on
    them); under torchrun ``stop_signal`` is the one all ranks agreed on in the latest
    step (None: go on). ``state_dict()`` must make a resumed run continue bit for bit.
    """

    config: dict[str, Any]  # what the run is (JSON); every torchrun rank must hold the same
    meta_steps: int  # meta-steps of the whole run
    meta_batch: int  # tasks per meta-step (split over torchrun ranks)
    step_count: int  # meta-steps done
    consecutive_failures: int  # meta-steps in a row in which every task failed
    stop_requests: list[int]
    stop_signal: int | None
    meta_gradient_tasks: int  # tasks in the meta-gradient the latest step() left (0: no update)

    @property
    def trains(self) -> bool:
        """False for a method without meta-training (the init is written as built)."""
        ...

    @property
    def finished(self) -> bool:
        """Meta-training is over: ``meta_steps`` done, nothing to train, or the trainer's own
        stopping rule (Multi-CV's meta-patience)."""
        ...

    @property
    def meta_optimizer(self) -> torch.optim.Optimizer | None:
        """The optimizer of θ0 (None: nothing to meta-update, e.g. finetuning, HAT)."""
        ...

    def meta_parameters(self) -> list[Tensor]:
        """θ0: the parameters ``meta_optimizer`` steps."""
        ...

    def meta_lr_at(self, step: int) -> float:
        """The meta learning rate of meta-step ``step`` (0-based): ``--meta-lr`` and the
        changes a continued run recorded in config.json."""
        ...

    def step(self) -> dict[str, Any]: ...

    def validate(self) -> dict[str, float]:
        """Metrics to add to the latest step's record ({} when no validation is due)."""
        ...

    def init_state(self) -> dict[str, Tensor] | None:
        """The learned initialization, written to init.safetensors (None: the experiment
        has no single initialization, e.g. Multi-CV's HAT and Progressive Nets)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TrainerState:
    """The bookkeeping every trainer shares, declared once: the meta-steps done, the
    failed ones in a row, the stop requests and signal, the tasks of the latest
    meta-gradient; and no meta-update by default (``meta_optimizer`` None). A trainer
    calls ``super().__init__()``; [`meta_step()`][leap.engine.loop.meta_step] keeps the counts."""

    def __init__(self) -> None:
        self.step_count = 0  # meta-steps done
        self.consecutive_failures = 0  # meta-steps in a row in which every task failed
        # Signals this process received (fit's handlers append), and the one the ranks agreed
        # to stop on after the latest step (None: go on; set by a trainer running under torchrun,
        # whose flags travel in the meta-gradient's all-reduce, so every rank stops after the
        # same meta-step).
        self.stop_requests: list[int] = []
        self.stop_signal: int | None = None
        self.meta_gradient_tasks = 0  # tasks in the meta-gradient the latest step() left

    @property
    def meta_optimizer(self) -> torch.optim.Optimizer | None:
        return None

    def meta_parameters(self) -> list[Tensor]:
        return []

    def meta_lr_at(self, step: int) -> float:
        raise NotImplementedError

    def stop_flags(self, device: torch.device | str) -> Tensor:
        """One flag per ``STOP_SIGNALS`` entry (SIGINT, SIGTERM), 1 where this
        process received that signal: a trainer puts them into the meta-gradient's
        all-reduce (as a rider of [`normalize_meta_gradient()`][leap.engine.meta_update.normalize_meta_gradient])
        and then calls `agree_on_stop()` with the summed flags."""
        return torch.tensor([float(s in self.stop_requests) for s in STOP_SIGNALS], device=device)

    def agree_on_stop(self, flags: Tensor) -> None:
        """Under torchrun, ``stop_signal`` becomes the first signal any rank received
        (``flags`` summed over the ranks), so that every rank stops after the same
        meta-step; alone, nothing (``fit`` reads ``stop_requests`` itself)."""
        if distributed.active():
            agreed = [s for s, n in zip(STOP_SIGNALS, flags.tolist(), strict=True) if n > 0]
            self.stop_signal = agreed[0] if agreed else None


class HookTrainerState(TrainerState):
    """``state_dict``/``load_state_dict`` of a trainer that holds ``model``, ``learner``
    (a `MetaLearner` or None), ``meta_opt`` (or None) and ``cfg`` (a
    [`RunConfig`][leap.experiments.config.RunConfig]: the meta learning rate's schedule): the
    meta-step, the failure count, the model, θ0 with its accumulators, the meta-optimizer
    and the global RNG states (loadable with ``torch.load(weights_only=True)``); and
    ``finished`` once ``meta_steps`` are done (or when it does not train). θ0 is the
    learner's parameters, stepped by ``meta_opt`` at ``cfg.meta_lr_at(step)``."""

    model: nn.Module
    learner: MetaLearner | None
    meta_opt: torch.optim.Optimizer | None
    cfg: Any
    meta_steps: int
    trains: bool

    @property
    def finished(self) -> bool:
        return not self.trains or self.step_count >= self.meta_steps

    @property
    def meta_optimizer(self) -> torch.optim.Optimizer | None:
        return self.meta_opt if self.learner is not None else None

    def meta_parameters(self) -> list[Tensor]:
        return list(self.learner.parameters()) if self.learner is not None else []

    def meta_lr_at(self, step: int) -> float:
        return self.cfg.meta_lr_at(step)

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step_count,
            "consecutive_failures": self.consecutive_failures,
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "learner": self.learner.state_dict() if self.learner is not None else {},
            "meta_opt": self.meta_opt.state_dict() if self.meta_opt is not None else {},
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
        set_rng_state(state["rng"])


class StepInterrupted(Exception):
    """Raised by a trainer's ``step`` that stopped inside a long meta-step at a safe point
    (e.g. between the games of an RL meta-step) because a stop was requested: its
    ``state_dict`` then holds the partial meta-step, so the checkpoint [`fit()`][leap.engine.loop.fit] writes
    resumes inside it, exactly."""


def _write_record(record: dict[str, Any], metrics: Any, meta_batch: int, log: Callable[[str], None]) -> None:
    """Append a meta-step's record to metrics.jsonl (rank 0: ``metrics`` is None elsewhere),
    warning about tasks the step dropped."""
    if metrics is None:
        return
    metrics.write(json.dumps(record) + "\n")
    metrics.flush()
    if record["dropped_tasks"]:
        log(f"warning: meta-step {record['step']}: dropped {record['dropped_tasks']} of "
            f"{meta_batch} tasks (non-finite loss or gradient)")


def _write_init(trainer: Trainer, out: Path, main: bool) -> None:
    """init.safetensors (rank 0), never non-finite: a θ0 with a NaN or an infinity stops
    the run instead (exit status 1). No safetensors metadata: its key order is not stable
    across processes, and config.json beside the file already says what produced it."""
    init = trainer.init_state()
    if init is not None and non_finite(init):
        raise RunStopped(f"θ0 is not finite after meta-step {trainer.step_count} (the meta learning rate is "
                         f"likely too high): init.safetensors not written", 1)
    if main and init is not None:
        save_init(out / "init.safetensors", init)


#: The keys of a meta-step's record that measure how it ran, not what it computed (wall
#: time, the process's peak memory): they differ between two runs of the same config.
MEASURED_KEYS = frozenset({"seconds", "peak_resident_mib"})


def meta_step(trainer: Trainer) -> dict[str, Any] | None:
    """One whole meta-step of ``trainer``: its task work (``trainer.step()``), the
    meta-update of θ0 ([`meta_update()`][leap.engine.meta_update.meta_update] at
    ``trainer.meta_lr_at(step)``; none without a ``meta_optimizer`` or when no task
    contributed) and the bookkeeping (``step_count``, ``consecutive_failures``).

    Returns the step's record, ``step`` first; None when the meta-update made θ0
    non-finite: θ0 and the meta-optimizer are then as before it and the step is not
    counted (``fit`` restores the rest of the trainer's state and stops)."""
    record = trainer.step()
    optimizer = getattr(trainer, "meta_optimizer", None)
    if optimizer is not None:
        start = time.perf_counter()
        sizes = meta_update(optimizer, trainer.meta_parameters(), trainer.meta_lr_at(trainer.step_count),
                            trainer.meta_gradient_tasks)
        if sizes is None:
            return None
        record.update(sizes)  # the meta-gradient's and the step's norms, θ0's norm
        if "seconds" in record:
            record["seconds"] += time.perf_counter() - start
    trainer.step_count += 1
    trainer.consecutive_failures = 0 if record["valid_tasks"] > 0 else trainer.consecutive_failures + 1
    return {"step": trainer.step_count, **record, "peak_resident_mib": round(peak_resident_mib(), 1)}


def fit(
    trainer: Trainer,
    out: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    same_run: RunMatcher | None = None,
    checkpoint_every: int = 0,
    keep_checkpoints: int = 2,
    max_failed_steps: int = 10,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[str], None] = print,
    tensorboard: bool = False,
) -> dict[str, Any]:
    """Meta-train into ``out`` (config.json, metrics.jsonl, checkpoints/, init.safetensors).

    The run claims ``out`` first ([`begin_run()`][leap.engine.rundir.begin_run], rank 0): its lock, the old
    run's outputs removed with ``overwrite`` (kept when ``resume`` continues the run the
    directory holds, as ``same_run`` tells from its config.json; default: the same
    config), and ``trainer.config`` written as config.json. A command checks the
    directory before any work ([`check_out_dir()`][leap.engine.rundir.check_out_dir]).
    Checkpoints are written every ``checkpoint_every`` meta-steps (the newest
    ``keep_checkpoints`` are kept; 0: all), on SIGINT/SIGTERM
    (after the meta-step in flight) and when ``max_failed_steps`` meta-steps in a row
    lost every task (both raise [`RunStopped`][leap.util.errors.RunStopped]). With ``resume`` the newest readable
    checkpoint is loaded and metrics.jsonl is cut back to its step, so the finished run is
    identical to an uninterrupted one. Each record has the meta-step's wall time and the
    process's peak memory since the run started (`MEASURED_KEYS`).

    Under torchrun every rank calls this; only rank 0 reads checkpoints (and sends the
    state to the others) and writes files. When ``max_failed_steps`` stops the run, it is
    rolled back to before the meta-update those failures followed. ``tensorboard`` mirrors
    each record as TensorBoard scalars under ``out/tensorboard`` (rank 0).

    (About 70 lines on purpose: every guarantee of the loop reads in this one place.)
    """
    ckpt_dir, metrics_path = out / "checkpoints", out / "metrics.jsonl"
    main = distributed.is_main()
    if distributed.active():
        _agree_on_the_run(trainer, out, log)
    if main:
        begin_run(out, trainer.config, same_run or (lambda existing: existing == trainer.config),
                  overwrite=overwrite, resume=resume)
    history = _restore(trainer, ckpt_dir, metrics_path, resume, log)  # the metrics so far, in every checkpoint
    reset_peak_resident()  # the records' peak memory is this run's, not an earlier one's in this process

    def checkpoint(step: int) -> Path:
        # Every rank holds the same state: rank 0 alone writes it.
        if not main:
            return checkpoint_path(ckpt_dir, step)
        return save_checkpoint(ckpt_dir, step, {**trainer.state_dict(), "metrics": history,
                                                "config": trainer.config}, keep=keep_checkpoints)

    start = time.perf_counter()
    # The state at the start of the last two meta-steps: when every task of a meta-step
    # fails, the meta-update before it is the likely cause, and the run stops rolled back
    # to before that update, so that it can continue with a lower learning rate.
    recent: deque[tuple[int, dict[str, Any]]] = deque(maxlen=2)
    before_failures: tuple[int, dict[str, Any]] | None = None
    board = TensorBoardLog(out, trainer.step_count + 1) if main and tensorboard else None
    with _stop_signals(trainer.stop_requests, log), contextlib.closing(board) if board else contextlib.nullcontext(), \
            metrics_path.open("a") if main else contextlib.nullcontext() as metrics:
        while not trainer.finished:
            recent.append((trainer.step_count, copy.deepcopy(trainer.state_dict())))
            try:
                done = meta_step(trainer)
            except StepInterrupted as inside:
                raise RunStopped(f"interrupted inside meta-step {trainer.step_count + 1} ({inside}); checkpoint "
                                 f"{checkpoint(trainer.step_count)} resumes there; continue with --resume",
                                 128 + trainer.stop_requests[0]) from None
            if done is None:  # θ0 became non-finite: the run stops as it was before this meta-step
                trainer.load_state_dict(recent[-1][1])
                raise RunStopped(DIVERGED.format(failed=trainer.step_count + 1, step=trainer.step_count,
                                                 checkpoint=checkpoint(trainer.step_count)), 1)
            record = done
            record.update(trainer.validate())
            history.append(record)
            _write_record(record, metrics, trainer.meta_batch, log)
            if board is not None:
                board.write(record)
            if on_step is not None:
                on_step(record)
            step = trainer.step_count
            if trainer.consecutive_failures == 1:
                before_failures = recent[0]
            stop = _why_stop(trainer, max_failed_steps)
            if stop is not None:
                if trainer.consecutive_failures >= max_failed_steps and before_failures is not None:
                    step = _roll_back(trainer, before_failures, history, ckpt_dir, metrics_path, main)
                raise RunStopped(stop[0].format(step=step, checkpoint=checkpoint(step)), stop[1])
            if checkpoint_every and step % checkpoint_every == 0 and step < trainer.meta_steps:
                checkpoint(step)
    _write_init(trainer, out, main)
    if trainer.trains:
        checkpoint(trainer.step_count)
    # Over every segment of a resumed run: the meta-steps' own times, from the metrics.
    return {"train_seconds": meta_training_seconds(history) if history
            else time.perf_counter() - start}


def _agree_on_the_run(trainer: Trainer, out: Path, log: Callable[[str], None]) -> None:
    """Under torchrun: every rank must run the same configuration; each says its share."""
    distributed.check_same(json.dumps(trainer.config, sort_keys=True), "run configuration")
    share = distributed.shard(range(trainer.meta_batch))
    tasks = f"tasks {share[0]}..{share[-1]}" if share else "no task"
    log(f"trains {tasks} of each meta-batch of {trainer.meta_batch}"
        + (f"; writes {out}" if distributed.is_main() else "; writes nothing"))


#: Configuration keys a resumed run may change: a run can be extended by more meta-steps,
#: and continued with another meta learning rate (recorded in meta_lr_changes).
EXTENDABLE = ("meta_steps", "meta_lr_changes")


def _checkpoint_check(trainer: Trainer) -> Callable[[dict[str, Any], Path], None]:
    """A check that a checkpoint fits this run, before anything of it is loaded: the
    configuration it carries is this run's (else a [`UsageError`][leap.util.errors.UsageError]: resuming it would
    continue another run), its step lies in 0..meta_steps with one metrics record per
    step, and every tensor state (model, θ0, accumulators) has this run's keys, shapes and
    dtypes (else a [`CorruptFileError`][leap.util.errors.CorruptFileError]: the loop falls back to an older one)."""
    reference = trainer.state_dict()

    def check(state: dict[str, Any], path: Path) -> None:
        written_by = state.get("config")
        differ = [] if written_by is None else sorted(
            k for k in {*written_by, *trainer.config}
            if k in written_by and written_by[k] != trainer.config.get(k) and k not in EXTENDABLE)
        if differ:
            raise UsageError(f"{path} was written by another configuration (it differs in {', '.join(differ)}): "
                             "resume with the run's own options, or start afresh without --resume")
        step = state["step"]
        if not isinstance(step, int) or not 0 <= step <= trainer.meta_steps:
            raise CorruptFileError(f"{path}: step {step!r} is not in 0..{trainer.meta_steps}")
        if "metrics" in state and (not isinstance(state["metrics"], list) or len(state["metrics"]) != step):
            raise CorruptFileError(f"{path}: its metrics do not cover its {step} meta-steps")
        missing = sorted(set(reference) - set(state))
        if missing:
            raise CorruptFileError(f"{path}: missing {', '.join(missing)}")
        for key, ref in reference.items():
            _same_structure(state[key], ref, f"{path}: {key}")

    return check


def _same_structure(value: Any, reference: Any, where: str) -> None:
    """Tensors match in shape and dtype; a non-empty dict of tensors (a state dict) has the
    same keys; other dicts are compared on their common keys; anything else is not checked."""
    if isinstance(reference, Tensor):
        if not isinstance(value, Tensor) or value.shape != reference.shape or value.dtype != reference.dtype:
            got = f"{value.dtype} {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
            raise CorruptFileError(f"{where} is {got}, this run's is {reference.dtype} {tuple(reference.shape)}")
    elif isinstance(reference, dict):
        if not isinstance(value, dict):
            raise CorruptFileError(f"{where} is {type(value).__name__}, not a dict")
        if reference and all(isinstance(v, Tensor) for v in reference.values()) and set(value) != set(reference):
            raise CorruptFileError(f"{where} has other entries than this run's")
        for key in set(value) & set(reference):
            _same_structure(value[key], reference[key], f"{where}.{key}")


def _restore(trainer: Trainer, ckpt_dir: Path, metrics_path: Path, resume: bool,
             log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Load the newest checkpoint (``resume``) or clear old ones, and return the metrics
    records of the meta-steps done, metrics.jsonl rewritten to match them."""
    main = distributed.is_main()
    loaded = None
    if resume:
        # Rank 0 reads the newest checkpoint and sends it to the others, so all ranks
        # continue from one state whether or not they share a file system.
        found = load_latest_checkpoint(ckpt_dir, _checkpoint_check(trainer)) if main else None
        loaded = distributed.broadcast_from_main(None if found is None else (found[0], str(found[1])))
    if loaded is not None:
        state, path = loaded
        trainer.load_state_dict(state)
        log(f"resuming from {path} (meta-step {trainer.step_count})")
    elif not resume and main:
        for _, old in list_checkpoints(ckpt_dir):
            old.unlink()
    history: list[dict[str, Any]] = []
    if not main:
        return history
    if loaded is not None and "metrics" in loaded[0]:
        # The checkpoint's own copy wins: metrics.jsonl may be lost, cut or ahead of it.
        history.extend(loaded[0]["metrics"])
        _write_metrics(metrics_path, history)
    else:
        truncate_metrics(metrics_path, trainer.step_count)
        if metrics_path.exists():
            history.extend(json.loads(line) for line in metrics_path.read_text().splitlines())
    return history


@contextlib.contextmanager
def _stop_signals(requests: list[int], log: Callable[[str], None]) -> Iterator[None]:
    """SIGINT and SIGTERM append to ``requests`` instead of killing the process (the loop
    stops after the meta-step in flight) and are acknowledged at once on ``log``: a
    meta-step can take minutes to hours (RL, Multi-CV). The previous handlers come back
    afterwards."""
    requests.clear()
    handlers = {}

    def request(signum: int, frame: Any) -> None:
        if not requests:
            log(f"{signal.Signals(signum).name} received: stopping after the meta-step in flight, with a "
                "checkpoint")
        requests.append(signum)

    for sig in STOP_SIGNALS:
        try:
            handlers[sig] = signal.signal(sig, request)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


DIVERGED = ("meta-step {failed} made θ0 non-finite (the meta learning rate is too high); θ0 is kept at meta-step "
            "{step}, checkpoint {checkpoint}; continue with a lower rate: the same command with --resume --meta-lr X "
            "(the change is recorded in config.json)")


def _write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    """metrics.jsonl rewritten (atomically) to exactly ``history``'s records."""
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in history).encode())


def _roll_back(trainer: Trainer, to: tuple[int, dict[str, Any]], history: list[dict[str, Any]], ckpt_dir: Path,
               metrics_path: Path, main: bool) -> int:
    """Put ``trainer`` back to the state ``to`` (the start of the meta-step before the
    failures), with its metrics, and drop later checkpoints; returns its meta-step."""
    step, state = to
    trainer.load_state_dict(state)
    del history[step:]
    if main:
        for later, path in list_checkpoints(ckpt_dir):
            if later > step:
                path.unlink()
        _write_metrics(metrics_path, history)
    return step


def _why_stop(trainer: Trainer, max_failed_steps: int) -> tuple[str, int] | None:
    """(message with {step} and {checkpoint}, exit status) if meta-training must stop now."""
    if trainer.consecutive_failures >= max_failed_steps:
        return (f"every task failed (non-finite) in {trainer.consecutive_failures} consecutive meta-steps; rolled "
                "back to meta-step {step}, before the meta-update they followed (checkpoint {checkpoint}); continue "
                "with lower learning rates: the same command with --resume --meta-lr X (recorded in config.json)", 1)
    # Alone, any signal so far counts; under torchrun, the one the ranks agreed on in this
    # step's all-reduce (so that all stop after the same meta-step).
    requests = trainer.stop_requests
    stop_signal = trainer.stop_signal if distributed.active() else (requests[0] if requests else None)
    if stop_signal is not None:
        return "interrupted at meta-step {step}; checkpoint {checkpoint}; continue with --resume", 128 + stop_signal
    return None


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
