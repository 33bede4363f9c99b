"""Run configuration: every hyperparameter of a meta-training run in one place, and its options.

Each benchmark's defaults, and the options only some benchmarks read, are declared by its
experiment and read through the experiment registry
([`leap.experiments.registry`][leap.experiments.registry]): this module names no benchmark.

Imports no torch: the command line is built from these declarations (``leap --help``
answers without it); the engine checks that need torch are imported by
[`RunConfig.validate()`][leap.experiments.config.RunConfig.validate].
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leap.engine.rundir import RunMatcher, check_out_dir
from leap.experiments import registry
from leap.experiments.methods import METHODS
from leap.util import checks, distributed
from leap.util.errors import UsageError
from leap.util.files import list_checkpoints
from leap.util.options import Option, add_options, boolean, by_name, check_fields, comma_list
from leap.util.threads import MAX_THREADS


# ---------------------------------------------------------------------- the meta learning rate's schedule
# A run continued with another --meta-lr (e.g. after θ0 diverged) records [from_step, lr]
# pairs in its config's ``meta_lr_changes``; every experiment's config reads them here.
def check_meta_lr_changes(changes: list[list[float]], lr_option: Option) -> None:
    """``changes`` are [from_step, lr] pairs, steps non-negative integers in order, each
    rate valid for ``lr_option`` (ValueError otherwise)."""
    steps = [c[0] for c in changes if isinstance(c, (list, tuple)) and len(c) == 2]
    if len(steps) != len(changes) or steps != sorted(steps) or any(
            not isinstance(step, int) or isinstance(step, bool) or step < 0 for step in steps):
        raise ValueError(f"meta_lr_changes must be [from_step, lr] pairs in step order, got {changes}")
    for _, lr in changes:
        lr_option.check(lr, "meta_lr_changes' learning rate")


def meta_lr_at(meta_lr: float, changes: list[list[float]], step: int) -> float:
    """The meta learning rate of meta-step ``step`` (0-based): ``meta_lr`` changed by ``changes``."""
    lr = meta_lr
    for from_step, changed in changes:
        if step >= from_step:
            lr = changed
    return lr


def continue_meta_lr(changes: list[list[float]], from_step: int, lr: float) -> list[list[float]]:
    """``changes`` continued at ``lr`` from meta-step ``from_step`` (the newest checkpoint's):
    the changes before it kept, those from it on replaced."""
    return [list(c) for c in changes if c[0] < from_step] + [[from_step, lr]]


def continues_meta_lr(existing: list[list[float]], mine: list[list[float]]) -> bool:
    """Whether ``mine`` continues a run whose config recorded ``existing``: they are a prefix
    of ``mine``, or (a run continued again from the same checkpoint, e.g. after the rate it
    was continued with diverged too) ``mine``'s last change replaces those from its step on."""
    existing, mine = [list(c) for c in existing], [list(c) for c in mine]
    if mine[: len(existing)] == existing:
        return True
    return bool(mine) and [c for c in existing if c[0] < mine[-1][0]] == mine[:-1]


@dataclass
class RunConfig:
    """One meta-training run. ``None`` fields take the benchmark's defaults (its
    [`Benchmark.defaults`][leap.experiments.registry.Benchmark] in the registry)."""

    method: str = "leap"
    benchmark: str = field(default_factory=registry.default_benchmark)
    seed: int = 0
    meta_steps: int | None = None
    meta_batch: int | None = None
    task_steps: int | None = None
    task_batch: int | None = None
    inner_lr: float | None = None
    inner_optimizer: str | None = None  # None: the benchmark's
    inner_clip: float | None = None  # clip each inner step's gradient norm; 0: never; None: the benchmark's
    meta_lr: float | None = None
    meta_optimizer: str | None = None  # None: the benchmark's, else SGD (Table 3)
    maml_steps: int | None = None
    pretrain_tasks: int | None = None
    eval_steps: int | None = None
    eval_batch: int | None = None
    eval_lr: float | None = None
    val_every: int | None = None
    # Leap's options (section 2.3): length metric, loss in the manifold, stabilizer.
    metric: str | None = None  # None: the benchmark's
    loss_in_manifold: bool = True
    stabilizer: bool = True
    # The image pipeline and whether test images are classified with running or test-batch
    # statistics (declared, and defaulted, by the benchmark that reads them:
    # leap.experiments.fewshot.options).
    pipeline: str | None = None
    bn_eval: str | None = None
    device: str = "cpu"
    data_dir: str | None = None
    # How tasks are trained (leap.engine.batched): "auto" is batched on CUDA, and on CPU
    # for cheap inner steps (resolve_engine); compile None = on for CUDA; chunk None = the
    # whole meta-batch at once.
    engine: str = "auto"
    compile: bool | None = None
    max_tasks_per_chunk: int | None = None
    # Arithmetic of the tasks' forward and backward passes (leap.engine.inner.PRECISIONS);
    # θ0 and the meta-gradient are float32 whatever it is.
    precision: str = "fp32"
    extra: dict[str, Any] = field(default_factory=dict)
    # [from_step, lr] pairs: the meta learning rate from meta-step from_step on (a run
    # continued with another --meta-lr after it diverged, leap train --resume --meta-lr X).
    meta_lr_changes: list[list[float]] = field(default_factory=list)

    def resolved(self) -> RunConfig:
        """A copy with the benchmark's defaults filled in and every value checked."""
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {list(METHODS)}")
        if self.benchmark not in registry.RUN_CONFIG:
            raise ValueError(f"unknown benchmark {self.benchmark!r}; choose from {sorted(registry.RUN_CONFIG)}")
        experiment, benchmark = registry.experiment_of(self.benchmark), registry.get_benchmark(self.benchmark)
        values = dataclasses.asdict(self)
        prepare = registry.hook(experiment, "prepare_config")
        if prepare is not None:  # defaults that depend on other values (RL: the pool's size)
            values = prepare(self.benchmark, values)
        for key, default in benchmark.defaults.items():
            if values[key] is None:
                values[key] = default
        for opt in experiment_run_options():
            # A field only other benchmarks read and this one leaves unset: giving it is an error.
            if (values[opt.name] is not None and self.benchmark not in opt.applies_to and opt.default is None
                    and opt.name not in benchmark.defaults):
                where = " and ".join(opt.applies_to)
                raise ValueError(f"{opt.name} applies to the {where} benchmark{'s' if len(opt.applies_to) > 1 else ''}"
                                 f" only, not {self.benchmark!r}")
        if values["meta_lr"] is None:
            values["meta_lr"] = METHODS[self.method].meta_lr  # Table 3's
        if values["meta_optimizer"] is None:
            values["meta_optimizer"] = "sgd"  # Table 3's
        cfg = RunConfig(**values)
        cfg.validate()
        resolve_extra = registry.hook(experiment, "resolve_extra")
        if resolve_extra is not None:
            cfg.extra = resolve_extra(cfg.benchmark, cfg.method, cfg.extra, cfg.to_dict())
        return cfg

    def validate(self) -> None:
        """Every field against its declared option (`RUN_OPTIONS`); options that do
        not apply to the benchmark, and the meta learning rate of a method without one,
        are not checked."""
        from leap.engine.batched import check_batchable_loop, resolve_engine
        from leap.engine.inner import check_precision

        options = run_fields()
        fields = {name: name for name in options if METHODS[self.method].has_learner or name != "meta_lr"}
        check_fields(self, options, fields, benchmark=self.benchmark)
        check_meta_lr_changes(self.meta_lr_changes, RUN_FIELDS["meta_lr"])
        check_precision(self.precision, self.device)
        if self.precision == "bf16":  # raises for an explicitly batched engine
            resolve_engine(self.engine, self.device, METHODS[self.method].batched, self.precision)
        if self.method == "maml" and (self.inner_optimizer not in (None, "sgd") or self.inner_clip):
            # leap.engine.inner.maml_task: differentiable plain SGD steps (the paper's MAML)
            raise ValueError("MAML differentiates through plain SGD steps: it needs --inner-optimizer sgd and "
                             "--inner-clip 0")
        if self.engine == "batched":  # what check_batchable would refuse once the run started
            if not registry.get_benchmark(self.benchmark).batched_engine:
                raise ValueError(f"the batched engine does not train --benchmark {self.benchmark}'s model "
                                 "(use --engine sequential)")
            if self.inner_optimizer is not None:
                check_batchable_loop(self.inner_optimizer, self.inner_clip or 0.0)

    def meta_lr_at(self, step: int) -> float:
        """The meta learning rate of meta-step ``step`` (0-based): ``meta_lr`` changed by
        ``meta_lr_changes``."""
        return meta_lr_at(self.meta_lr, self.meta_lr_changes, step)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        return checks.dataclass_from_dict(cls, values)


# ---------------------------------------------------------------------- the options
B = " (default: the benchmark's)"
#: The benchmarks whose runs read these options (an experiment with its own config sets them itself).
TRAINED_BY_FIT = registry.RUN_CONFIG
SEED_MAX = 2**63 - 1  # torch's generators take 64-bit seeds
LR_MAX = 3.4028234663852886e38  # the largest float32: parameters are float32, so is a step's scale

#: The options of ``leap train`` that every experiment's benchmarks share, declared once:
#: the command line is built from these and the experiments' own
#: ([`run_options()`][leap.experiments.config.run_options]), and
#: [`RunConfig.validate()`][leap.experiments.config.RunConfig.validate] checks a run's
#: fields (from the CLI, a config.json or Python) against the same ranges. Default None:
#: the benchmark's ([`Benchmark.defaults`][leap.experiments.registry.Benchmark]).
RUN_OPTIONS = (
    # Its default is the first registered benchmark (add_run_options), which needs no download.
    Option("benchmark", "task family (the default needs no download)", choices=registry.ALL),
    Option("seed", "seed of everything random in the run", int, default=0, low=0, high=SEED_MAX),
    Option("meta_steps", "meta-training steps" + B, int, low=1),
    Option("meta_batch", "tasks per meta-step" + B, int, low=1),
    Option("task_steps", "inner steps per task in meta-training" + B, int, low=1, applies_to=TRAINED_BY_FIT),
    Option("task_batch", "samples per inner step" + B, int, low=1),
    Option("inner_lr", "inner (task) learning rate" + B, float, above=0, high=LR_MAX),
    Option("inner_optimizer", "the tasks' optimizer" + B, choices=("sgd", "adam", "adamw", "rmsprop"),
           applies_to=TRAINED_BY_FIT),
    Option("meta_lr", "meta learning rate (default: the benchmark's, else Table 3's per method)", float, above=0,
           high=LR_MAX),
    Option("meta_optimizer", "the torch.optim optimizer that steps θ0 (Algorithm 1, line 13) (default: the "
           "benchmark's, else sgd)", choices=("sgd", "adam"), applies_to=TRAINED_BY_FIT),
    Option("pretrain_tasks", "number of pretraining task sources" + B, int, low=1, applies_to=TRAINED_BY_FIT),
    Option("eval_steps", "training steps on each held-out task" + B, int, low=1, applies_to=TRAINED_BY_FIT),
    Option("eval_batch", "samples per step on held-out tasks" + B, int, low=1),
    Option("eval_lr", "learning rate on held-out tasks" + B, float, above=0, high=LR_MAX),
    Option("metric", "Leap: d1 (length) or d2 (energy)" + B, choices=("length", "energy")),
    Option("loss_in_manifold", "Leap: γ = (θ, f(θ))", boolean, default=True, applies_to=TRAINED_BY_FIT),
    Option("stabilizer", "Leap: use the stabilizer μ", boolean, default=True, applies_to=TRAINED_BY_FIT),
    Option("device", "cpu, cuda or cuda:N", default="cpu"),
    Option("data_dir", "dataset directory (benchmarks that read data)", optional=True,
           applies_to=registry.READS_DATA),
)
RUN_FIELDS = by_name(RUN_OPTIONS)


def experiment_run_options() -> tuple[Option, ...]:
    """The RunConfig options that only some experiments' benchmarks read, declared by those
    experiments ([`Experiment.run_options`][leap.experiments.registry.Experiment])."""
    return tuple(opt for e in registry.experiments().values() if e.run_options for opt in registry.load(e.run_options))


def run_options() -> tuple[Option, ...]:
    """Every option of a RunConfig field: the shared ones, then the experiments' own."""
    return (*RUN_OPTIONS, *experiment_run_options())


def run_fields() -> dict[str, Option]:
    """[`run_options()`][leap.experiments.config.run_options] by field name."""
    return by_name(run_options())

#: Options of a run's execution, not of its result (not in config.json).
EXECUTION_OPTIONS = (
    Option("overwrite", "replace an output directory holding another run", action="store_true"),
    # Every benchmark takes it, so that the loop's advice ("continue with --resume") holds for
    # each; an experiment whose runs always continue (Multi-CV) accepts it as its default.
    Option("resume", "continue from the newest complete checkpoint in --out", action="store_true"),
    Option("checkpoint_every", "checkpoint every M meta-steps (0: only at the end)", int, default=0, low=0,
           applies_to=TRAINED_BY_FIT),
    Option("keep_checkpoints", "keep the newest K checkpoints (0: all, e.g. to evaluate θ0 along meta-training "
           "with leap evaluate RUN --checkpoint STEP)", int, default=2, low=0, applies_to=TRAINED_BY_FIT),
    Option("max_failed_steps", "stop after R consecutive meta-steps in which every task was non-finite", int,
           default=10, low=1, applies_to=TRAINED_BY_FIT),
    Option("no_progress", "no progress bar", action="store_true"),
    Option("tensorboard", "also write the metrics as TensorBoard scalars to OUT/tensorboard (needs the tensorboard "
           "package; metrics.jsonl stays the record)", action="store_true", applies_to=TRAINED_BY_FIT),
)
EXECUTION_FIELDS = by_name(EXECUTION_OPTIONS)
#: A list of seeds (``leap sweep``, ``leap rl-eval``): each item as ``--seed``; the
#: command's help says what its default is.
SEEDS = dataclasses.replace(RUN_FIELDS["seed"], name="seeds", type=comma_list(int), default=None)
#: Every command that computes takes it (leap.util.threads: the thread policy).
THREADS = Option("threads", "intra-op CPU threads (default: 1 for small models, else the free cores; "
                 "OMP_NUM_THREADS if set)", int, low=1, high=MAX_THREADS, optional=True)
DIST_TIMEOUT = Option(
    "dist_timeout", "under torchrun: how long a rank waits for the others at a collective before failing "
    f"(default {distributed.DEFAULT_TIMEOUT_S:g})", float, default=distributed.DEFAULT_TIMEOUT_S, above=0,
    high=distributed.MAX_TIMEOUT_S, metavar="SECONDS")  # every benchmark runs under torchrun


def add_run_options(p: argparse.ArgumentParser, command: str) -> None:
    """The options of ``leap COMMAND`` (train, compare, sweep): the run's (None = the
    benchmark's default), their execution's, the thread count, and each experiment's own
    option group for that command ([`Experiment.option_groups`][leap.experiments.registry.Experiment]).
    Sweep lists --seed and --pretrain-tasks itself."""
    skip = ("seed", "pretrain_tasks") if command == "sweep" else ()
    dataclasses.replace(RUN_FIELDS["benchmark"], default=registry.default_benchmark()).add_to(p)
    add_options(p, run_options(), skip=(*skip, "benchmark"))
    add_options(p, EXECUTION_OPTIONS)
    THREADS.add_to(p)
    for experiment in registry.experiments().values():
        group = experiment.option_groups.get(command)
        if group is not None:
            registry.load(group)(p)


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """--engine and --compile for ``leap evaluate``, default None: the run's own."""
    for name in ("engine", "compile"):
        dataclasses.replace(run_fields()[name], default=None).add_to(p)


def add_dist_options(p: argparse.ArgumentParser) -> None:
    DIST_TIMEOUT.add_to(p)


def join_workers(device: str, timeout_s: float, unsplittable: str | None = None) -> None:
    """Under torchrun, join the other processes before any data lands on a device
    (``--device cuda`` then means this process's GPU, cuda:LOCAL_RANK); alone, nothing.
    ``unsplittable``: why this run cannot be split over processes (refused, one line)."""
    from leap.util.devices import check_device

    if not timeout_s > 0:
        raise UsageError(f"--dist-timeout must be > 0 seconds, got {timeout_s}")
    if not distributed.launched():
        return
    if unsplittable is not None:
        raise UsageError(f"{unsplittable} and cannot be split over processes: run it without torchrun")
    check_device(device)
    try:
        distributed.setup(device, timeout_s)
    except ValueError as err:
        raise UsageError(str(err)) from err


def config_from_args(args: argparse.Namespace, method: str) -> RunConfig:
    values = {name: getattr(args, name) for name in run_fields()}
    extra_from_args = registry.hook(registry.experiment_of(args.benchmark), "extra_from_args")
    try:
        values["extra"] = extra_from_args(args) if extra_from_args is not None else {}  # an experiment's own options
        return RunConfig(method=method, **values).resolved()
    except ValueError as err:
        raise UsageError(str(err)) from err


def run_matcher(cfg: RunConfig, extending: bool = False) -> RunMatcher:
    """Whether a config.json describes the run ``cfg`` (for
    [`leap.engine.rundir.holds_run()`][leap.engine.rundir.holds_run]).
    Keys a newer version added (execution options such as the engine) take this run's
    values, so directories written before a new option was introduced still match. With
    ``extending`` (``train --resume``), a run of fewer meta-steps is ``cfg``'s too."""
    def matches(existing: dict[str, Any]) -> bool:
        if extending and isinstance(existing.get("meta_steps"), int) and existing["meta_steps"] <= cfg.meta_steps:
            existing = {**existing, "meta_steps": cfg.meta_steps}
        known = registry.benchmarks().get(existing.get("benchmark"))  # type: ignore[arg-type]
        if known is not None:  # written before some fields existed: what such a run did
            legacy = dict(known.legacy_config)
            legacy_extra = legacy.pop("extra", {})  # an experiment's own options, one by one
            existing = {**legacy, **existing}
            if legacy_extra and isinstance(existing.get("extra"), dict):
                existing = {**existing, "extra": {**legacy_extra, **existing["extra"]}}
        existing = {"precision": "fp32", **existing}  # written before the option existed
        if not continues_meta_lr(existing.get("meta_lr_changes", []), cfg.meta_lr_changes):
            return False
        existing = {**existing, "meta_lr_changes": cfg.meta_lr_changes}
        return RunConfig.from_dict({**cfg.to_dict(), **existing}) == cfg and set(existing) <= set(cfg.to_dict())
    return matches


def continued_config(out: Path, cfg: RunConfig, meta_lr_given: bool) -> RunConfig:
    """The config with which ``leap train --resume`` continues the run in ``out``.

    A run continued with another meta learning rate (``--meta-lr X``, e.g. after it
    diverged) records the change in ``meta_lr_changes``, from the newest checkpoint's
    meta-step on, so that training the recorded config from scratch gives the same run;
    resuming without ``--meta-lr`` keeps the changes already recorded. A run is extended
    by a larger ``--meta-steps`` (the loop's checkpoints allow it); a smaller one than the
    run already has is refused. ``cfg`` is returned unchanged when the run differs in
    anything else (the directory check refuses it)."""
    try:
        existing = RunConfig.from_dict(json.loads((out / "config.json").read_text())).resolved()
    except (OSError, ValueError, TypeError):
        return cfg
    if dataclasses.replace(existing, meta_lr=cfg.meta_lr, meta_lr_changes=[], meta_steps=cfg.meta_steps) != cfg:
        return cfg  # another run: not ours to continue
    if cfg.meta_steps < existing.meta_steps:
        raise UsageError(f"--meta-steps {cfg.meta_steps}: the run in {out} has {existing.meta_steps}; a run can be "
                         "extended, not shortened")
    existing = dataclasses.replace(existing, meta_steps=cfg.meta_steps)
    current = existing.meta_lr_at(2**62)
    if not meta_lr_given:
        return existing if cfg.meta_lr == existing.meta_lr else cfg
    if cfg.meta_lr == current:
        return existing
    found = list_checkpoints(out / "checkpoints")
    step = found[-1][0] if found else 0
    return dataclasses.replace(existing, meta_lr_changes=continue_meta_lr(existing.meta_lr_changes, step,
                                                                          cfg.meta_lr)).resolved()


def resumed_config(out: Path, cfg: RunConfig, args: argparse.Namespace) -> RunConfig:
    """The config ``leap train`` runs into ``out``: with ``--resume`` (and no
    ``--overwrite``), [`continued_config()`][leap.experiments.config.continued_config] (a longer run, a changed
    meta learning rate,
    said on stderr by rank 0); else ``cfg``."""
    if not args.resume or args.overwrite:
        return cfg
    continued = continued_config(out, cfg, meta_lr_given=args.meta_lr is not None)
    if len(continued.meta_lr_changes) > len(cfg.meta_lr_changes) and distributed.launch_rank() == 0:
        step, lr = continued.meta_lr_changes[-1]
        print(f"leap: continuing {out} with meta learning rate {lr:g} from meta-step {step} "
              "(recorded in config.json as meta_lr_changes)", file=sys.stderr)
    return continued


def read_run_config(run: Path, overrides: dict[str, Any]) -> RunConfig:
    """The config of the run in ``run`` (a run directory or a file in it), from its
    config.json with ``overrides`` applied and resolved; a missing or unreadable file is a
    [`UsageError`][leap.util.errors.UsageError] naming it."""
    if not run.exists():
        raise UsageError(f"{run}: no such run directory or init file")
    config_path = (run if run.is_dir() else run.parent) / "config.json"
    if not config_path.is_file():
        raise UsageError(f"{config_path}: no config.json beside the initialization")
    try:
        return RunConfig.from_dict({**json.loads(config_path.read_text()), **overrides}).resolved()
    except (ValueError, TypeError) as err:
        raise UsageError(f"{config_path}: {err}") from err


def check_run_dir(out: Path, cfg: RunConfig, overwrite: bool, extending: bool = False) -> None:
    """[`leap.engine.rundir.check_out_dir()`][leap.engine.rundir.check_out_dir] for a run of ``cfg`` (``extending``: see
    [`run_matcher()`][leap.experiments.config.run_matcher])."""
    check_out_dir(out, run_matcher(cfg, extending), overwrite)
