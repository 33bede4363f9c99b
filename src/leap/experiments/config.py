"""Run configuration: every hyperparameter of a meta-training run in one place, and its options.

Defaults follow the paper's Table 3 (Omniglot) where a benchmark reproduces it; the
built-in benchmark scales budgets down so that a comparison runs in minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from leap.engine.rundir import check_out_dir
from leap.experiments.methods import METHODS
from leap.experiments.rl.options import GENERIC_DEFAULTS as RL_DEFAULTS
from leap.experiments.rl.options import RL_BENCHMARKS, add_rl_options, extra_from_args, pretrain_default, resolve_extra
from leap.tasks.omniglot import BN_EVAL, PIPELINES
from leap.util import checks, distributed
from leap.util.errors import UsageError

BENCHMARK_DEFAULTS: dict[str, dict[str, Any]] = {
    "builtin": dict(
        meta_steps=100, meta_batch=5, task_steps=50, task_batch=20, inner_lr=0.1,
        maml_steps=5, pretrain_tasks=20, eval_steps=50, eval_batch=20, eval_lr=0.1, val_every=0,
    ),
    "omniglot": dict(
        meta_steps=1000, meta_batch=20, task_steps=100, task_batch=20, inner_lr=0.1,
        maml_steps=5, pretrain_tasks=25, eval_steps=100, eval_batch=20, eval_lr=0.1, val_every=100,
    ),
    # Reinforcement learning (section 4.3): see leap.experiments.rl.options for how the fields read there.
    **RL_DEFAULTS,
}


#: Omniglot's protocol options, their choices and defaults (the authors' code).
OMNIGLOT_PROTOCOL = {"pipeline": "released", "bn_eval": "running"}
OMNIGLOT_CHOICES = {"pipeline": PIPELINES, "bn_eval": BN_EVAL}


@dataclass
class RunConfig:
    """One meta-training run. ``None`` fields take the benchmark's defaults."""

    method: str = "leap"
    benchmark: str = "builtin"
    seed: int = 0
    meta_steps: int | None = None
    meta_batch: int | None = None
    task_steps: int | None = None
    task_batch: int | None = None
    inner_lr: float | None = None
    inner_optimizer: str | None = None  # None: the benchmark's (RL: rmsprop), else sgd
    meta_lr: float | None = None
    meta_optimizer: str = "sgd"
    maml_steps: int | None = None
    pretrain_tasks: int | None = None
    eval_steps: int | None = None
    eval_batch: int | None = None
    eval_lr: float | None = None
    val_every: int | None = None
    # Leap's options (section 2.3): length metric, loss in the manifold, stabilizer.
    metric: str | None = None  # None: the benchmark's (RL: energy, section 4.3), else length
    loss_in_manifold: bool = True
    stabilizer: bool = True
    # Omniglot's protocol details (leap.tasks.omniglot): the image pipeline, and whether
    # test images are classified with running (default) or test-batch statistics.
    pipeline: str | None = None
    bn_eval: str | None = None
    device: str = "cpu"
    data_dir: str | None = None
    # How tasks are trained (leap.engine.batched): "auto" is batched on CUDA, sequential
    # on CPU; compile None = on for CUDA; chunk None = the whole meta-batch at once.
    engine: str = "auto"
    compile: bool | None = None
    max_tasks_per_chunk: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> RunConfig:
        """A copy with the benchmark's defaults filled in and every value checked."""
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {list(METHODS)}")
        if self.benchmark not in BENCHMARK_DEFAULTS:
            raise ValueError(f"unknown benchmark {self.benchmark!r}; choose from {sorted(BENCHMARK_DEFAULTS)}")
        values = dataclasses.asdict(self)
        if self.benchmark in RL_BENCHMARKS and values["pretrain_tasks"] is None:
            values["pretrain_tasks"] = pretrain_default(self.benchmark, self.extra)
        for key, default in BENCHMARK_DEFAULTS[self.benchmark].items():
            if values[key] is None:
                values[key] = default
        for name, default in OMNIGLOT_PROTOCOL.items():
            if self.benchmark == "omniglot":
                values[name] = values[name] or default
            elif values[name] is not None:
                raise ValueError(f"{name} applies to the omniglot benchmark only, not {self.benchmark!r}")
        values["inner_optimizer"] = values["inner_optimizer"] or "sgd"
        values["metric"] = values["metric"] or "length"
        if values["meta_lr"] is None:
            values["meta_lr"] = METHODS[self.method].meta_lr  # Table 3's
        cfg = RunConfig(**values)
        cfg.validate()
        if cfg.benchmark in RL_BENCHMARKS:
            cfg.extra = resolve_extra(cfg.benchmark, cfg.method, cfg.extra, cfg.to_dict())
        return cfg

    def validate(self) -> None:
        checks.positive_ints(self, ("meta_steps", "meta_batch", "task_steps", "task_batch", "maml_steps",
                                    "pretrain_tasks", "eval_steps", "eval_batch"))
        checks.non_negative_int("val_every", self.val_every)
        checks.positive_numbers(self, ("inner_lr", "eval_lr"))
        if METHODS[self.method].has_learner:
            checks.positive_number("meta_lr", self.meta_lr)
        checks.one_of("metric", self.metric, ("length", "energy"))
        checks.one_of("meta_optimizer", self.meta_optimizer, ("sgd", "adam"))
        checks.one_of("inner_optimizer", self.inner_optimizer, ("sgd", "adam", "rmsprop"))
        if self.benchmark == "omniglot":
            for name, choices in OMNIGLOT_CHOICES.items():
                checks.one_of(name, getattr(self, name), choices)
        checks.one_of("engine", self.engine, ("auto", "batched", "sequential"))
        checks.one_of("compile", self.compile, (None, True, False))
        checks.positive_int("max_tasks_per_chunk", self.max_tasks_per_chunk, optional=True)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        return checks.dataclass_from_dict(cls, values)


# ---------------------------------------------------------------------- command-line options
CONFIG_FIELDS = (
    "benchmark", "seed", "meta_steps", "meta_batch", "task_steps", "task_batch", "inner_lr", "inner_optimizer",
    "meta_lr", "meta_optimizer", "maml_steps", "pretrain_tasks", "eval_steps", "eval_batch", "eval_lr",
    "val_every", "metric", "loss_in_manifold", "stabilizer", "pipeline", "bn_eval", "device", "data_dir",
    "engine", "compile", "max_tasks_per_chunk",
)


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


B = " (default: the benchmark's)"
FEWSHOT_BENCHMARKS = ("builtin", "omniglot")
TRAINED_BY_FIT = (*FEWSHOT_BENCHMARKS, *RL_BENCHMARKS)  # Multi-CV sets these itself (appendix E)


def option(p: Any, *flags: str, applies_to: Sequence[str] | None = None, **kwargs: Any) -> argparse.Action:
    """``p.add_argument(*flags, **kwargs)`` with the benchmarks the option applies to
    (None: all). An option is declared once, here: its type, default, help and scope;
    ``check_options_apply`` refuses it for any other benchmark."""
    action = p.add_argument(*flags, **kwargs)
    action.applies_to = None if applies_to is None else tuple(applies_to)  # type: ignore[attr-defined]
    return action


def add_run_options(p: argparse.ArgumentParser, per_run: bool = True) -> None:
    """Options shared by train, compare and sweep (None = the benchmark's default).
    ``per_run=False`` (sweep) leaves out --seed and --pretrain-tasks, which sweep lists."""
    p.add_argument("--benchmark", default="builtin", choices=sorted([*BENCHMARK_DEFAULTS, "multicv"]),
                   help="task family (default: builtin, needs no download)")
    if per_run:
        p.add_argument("--seed", type=int, default=0, help="seed of everything random in the run")
    p.add_argument("--meta-steps", type=int, help="meta-training steps" + B)
    p.add_argument("--meta-batch", type=int, help="tasks per meta-step" + B)
    option(p, "--task-steps", applies_to=TRAINED_BY_FIT, type=int, help="inner steps per task in meta-training" + B)
    p.add_argument("--task-batch", type=int, help="samples per inner step" + B)
    p.add_argument("--inner-lr", type=float, help="inner (task) learning rate" + B)
    option(p, "--inner-optimizer", applies_to=TRAINED_BY_FIT, choices=["sgd", "adam", "rmsprop"],
           help="default: sgd (atari, minatar: rmsprop as in appendix F)")
    p.add_argument("--meta-lr", type=float, help="meta learning rate (default: Table 3's per method)")
    option(p, "--meta-optimizer", applies_to=TRAINED_BY_FIT, default="sgd", choices=["sgd", "adam"],
           help="the torch.optim optimizer that steps θ0 (Algorithm 1, line 13)")
    option(p, "--maml-steps", applies_to=FEWSHOT_BENCHMARKS, type=int,
           help="MAML's differentiated inner steps in meta-training" + B)
    if per_run:
        option(p, "--pretrain-tasks", applies_to=TRAINED_BY_FIT, type=int,
               help="number of pretraining task sources" + B)
    option(p, "--eval-steps", applies_to=TRAINED_BY_FIT, type=int, help="training steps on each held-out task" + B)
    p.add_argument("--eval-batch", type=int, help="samples per step on held-out tasks" + B)
    p.add_argument("--eval-lr", type=float, help="learning rate on held-out tasks" + B)
    option(p, "--val-every", applies_to=FEWSHOT_BENCHMARKS, type=int, help="validate every M meta-steps (0: never)" + B)
    p.add_argument("--metric", choices=["length", "energy"],
                   help="Leap: d1 or d2 (default: length; atari, minatar: energy as in section 4.3)")
    option(p, "--loss-in-manifold", applies_to=TRAINED_BY_FIT, type=_bool, default=True, help="Leap: γ = (θ, f(θ))")
    option(p, "--stabilizer", applies_to=TRAINED_BY_FIT, type=_bool, default=True, help="Leap: use the stabilizer μ")
    option(p, "--pipeline", applies_to=("omniglot",), choices=OMNIGLOT_CHOICES["pipeline"],
           help="omniglot: image pipeline; released (default): the authors' code (nearest-neighbour "
                "resize, not inverted, nearest augmentation, batch-norm scales U(0, 1)); smooth: Lanczos, "
                "inverted, bilinear, scales 1")
    option(p, "--bn-eval", applies_to=("omniglot",), choices=OMNIGLOT_CHOICES["bn_eval"],
           help="omniglot: classify test images with batch norm's running statistics of the task's "
                "training (default, non-transductive) or with the test batch's own (transductive)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    option(p, "--data-dir", applies_to=("omniglot", "multicv"), help="dataset directory (benchmarks that read data)")
    add_engine_options(p)
    option(p, "--max-tasks-per-chunk", applies_to=FEWSHOT_BENCHMARKS, type=int,
           help="batched engine: most tasks trained at once (default: the whole meta-batch, halved on "
                "CUDA out-of-memory)")
    option(p, "--download", applies_to=("omniglot",), action="store_true",
           help="omniglot: fetch the official archives into --data-dir if they are missing")
    p.add_argument("--overwrite", action="store_true", help="replace an output directory holding another run")
    option(p, "--resume", applies_to=TRAINED_BY_FIT, action="store_true",
           help="continue from the newest complete checkpoint in --out")
    option(p, "--checkpoint-every", applies_to=TRAINED_BY_FIT, type=int, default=0,
           help="checkpoint every M meta-steps (0: only at the end)")
    option(p, "--max-failed-steps", applies_to=TRAINED_BY_FIT, type=int, default=10,
           help="stop after R consecutive meta-steps in which every task was non-finite")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_rl_options(p)


def add_engine_options(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    """--engine and --compile (leap.engine.batched); ``default`` None keeps a run's own."""
    option(p, "--engine", applies_to=FEWSHOT_BENCHMARKS, default=default, choices=["auto", "batched", "sequential"],
           help="train a meta-batch's tasks all at once (batched) or one by one (sequential); auto: "
                "batched on CUDA, sequential on CPU; MAML and finetuning always train sequentially")
    option(p, "--compile", applies_to=FEWSHOT_BENCHMARKS, type=_bool, default=None,
           help="batched engine: torch.compile the inner step (default: on for CUDA, off on CPU)")


def add_dist_options(p: argparse.ArgumentParser) -> None:
    option(p, "--dist-timeout", applies_to=FEWSHOT_BENCHMARKS, type=float, default=distributed.DEFAULT_TIMEOUT_S,
           metavar="SECONDS",
           help="under torchrun: how long a rank waits for the others at a collective before failing "
                f"(default {distributed.DEFAULT_TIMEOUT_S:g})")


def given_options(parser: argparse.ArgumentParser, argv: list[str]) -> list[tuple[str, argparse.Action]]:
    """(flag, action) of every option that appears in ``argv`` (the parser must not accept
    abbreviations, so each option is spelled out)."""
    given = []
    for token in argv:
        if token == "--":
            break
        flag = token.split("=", 1)[0]
        action = parser._option_string_actions.get(flag)
        if action is not None:
            given.append((flag, action))
    return given


def check_options_apply(parser: argparse.ArgumentParser, argv: list[str], benchmark: str) -> None:
    """Refuse an option given for a benchmark it does not apply to (its ``applies_to``,
    declared with the option by :func:`option`), naming the option."""
    for flag, action in given_options(parser, argv):
        scope = getattr(action, "applies_to", None)
        if scope is not None and benchmark not in scope:
            raise UsageError(f"{flag} does not apply to --benchmark {benchmark} (only to {', '.join(scope)})")


def config_from_args(args: argparse.Namespace, method: str) -> RunConfig:
    if args.checkpoint_every < 0:
        raise UsageError(f"--checkpoint-every must be >= 0, got {args.checkpoint_every}")
    if args.max_failed_steps < 1:
        raise UsageError(f"--max-failed-steps must be >= 1, got {args.max_failed_steps}")
    values = {name: getattr(args, name) for name in CONFIG_FIELDS}
    try:
        values["extra"] = extra_from_args(args)  # the RL benchmarks' own options
        return RunConfig(method=method, **values).resolved()
    except ValueError as err:
        raise UsageError(str(err)) from err


def holds_run(out: Path, cfg: RunConfig) -> bool:
    """Whether ``out/config.json`` describes the run ``cfg``. Keys a newer version added
    (execution options such as the engine) take this run's values, so directories
    written before a new option was introduced still match."""
    try:
        existing = json.loads((out / "config.json").read_text())
        if existing.get("benchmark") == "omniglot":
            # Written before the protocol options existed: the smooth pipeline, batch statistics.
            existing = {"pipeline": "smooth", "bn_eval": "batch", **existing}
        return RunConfig.from_dict({**cfg.to_dict(), **existing}) == cfg and set(existing) <= set(cfg.to_dict())
    except (OSError, ValueError, TypeError):
        return False


def read_run_config(run: Path, overrides: dict[str, Any]) -> RunConfig:
    """The config of the run in ``run`` (a run directory or a file in it), from its
    config.json with ``overrides`` applied and resolved; a missing or unreadable file is a
    :class:`~leap.util.errors.UsageError` naming it."""
    config_path = (run if run.is_dir() else run.parent) / "config.json"
    if not config_path.is_file():
        raise UsageError(f"{config_path}: no config.json beside the initialization")
    try:
        return RunConfig.from_dict({**json.loads(config_path.read_text()), **overrides}).resolved()
    except (ValueError, TypeError) as err:
        raise UsageError(f"{config_path}: {err}") from err


def check_run_dir(out: Path, cfg: RunConfig, overwrite: bool) -> None:
    """:func:`leap.engine.rundir.check_out_dir` for a run of ``cfg``."""
    check_out_dir(out, partial(holds_run, cfg=cfg), overwrite)
