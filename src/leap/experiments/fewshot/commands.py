"""Commands of the few-shot experiments (builtin, Omniglot): train, evaluate, compare, sweep.

Every option is checked before any work is done; bad input raises
[`UsageError`][leap.util.errors.UsageError] (one line, exit status 2, from ``leap.cli``).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

from torch import Tensor

from leap.engine.batched import choose_engine
from leap.engine.evaluation import evaluate
from leap.engine.loop import fit
from leap.engine.memory import check_fits, estimate_bytes
from leap.engine.rundir import holds_run
from leap.experiments.config import (
    RunConfig,
    check_run_dir,
    config_from_args,
    join_workers,
    read_run_config,
    resumed_config,
    run_matcher,
)
from leap.experiments.fewshot.options import BENCHMARKS
from leap.experiments.fewshot.report import BENCHMARK_NAMES, comparison_table, plot_curves, write_report
from leap.experiments.fewshot.results import eval_file, fresh_heads, read_result, stamp
from leap.experiments.fewshot.trainer import MetaTrainer, build_benchmark, engine_options, eval_loop
from leap.experiments.methods import METHODS
from leap.tasks import Benchmark
from leap.tasks.base import example_input
from leap.util import distributed
from leap.util.devices import check_device
from leap.util.errors import CorruptFileError, UsageError
from leap.util.files import (
    atomic_write_json,
    atomic_write_text,
    check_state,
    checkpoint_path,
    init_bytes,
    list_checkpoints,
    load_checkpoint,
    read_init,
)
from leap.util.progress import Progress, TaskProgress


def prepare(cfg: RunConfig, download: bool = False) -> Benchmark:
    """Check what depends on the machine and the data, before any output is written."""
    if cfg.benchmark not in BENCHMARKS:  # e.g. a run of another experiment, by path
        raise UsageError(f"--benchmark {cfg.benchmark}: not a few-shot benchmark ({', '.join(BENCHMARKS)})")
    check_device(cfg.device)
    try:
        if download:
            if cfg.benchmark != "omniglot" or cfg.data_dir is None:
                raise UsageError("--download needs --benchmark omniglot and --data-dir DIR")
            from leap.tasks.omniglot import download_omniglot

            download_omniglot(cfg.data_dir)
        benchmark = build_benchmark(cfg)
    except (FileNotFoundError, CorruptFileError, ValueError) as err:
        raise UsageError(str(err)) from err
    available = benchmark.num_sources("train")
    if cfg.pretrain_tasks > available:
        raise UsageError(
            f"--pretrain-tasks {cfg.pretrain_tasks}: benchmark {cfg.benchmark!r} has {available} pretraining tasks"
        )
    check_memory(cfg, benchmark)
    return benchmark


def check_memory(cfg: RunConfig, benchmark: Benchmark) -> None:
    """Refuse batch sizes (and tasks trained at once) beyond the device's memory, before
    anything is written ([`leap.engine.memory`][leap.engine.memory])."""
    example = example_input(benchmark)
    model = benchmark.make_model()
    batched = choose_engine(model, cfg.engine, batch=cfg.task_batch, batchable=METHODS[cfg.method].batched,
                            precision=cfg.precision, example=lambda: example) == "batched"
    at_once = min(cfg.meta_batch, cfg.max_tasks_per_chunk or cfg.meta_batch) if batched else 1
    batch = max(cfg.task_batch, cfg.eval_batch)
    what = f"--task-batch {cfg.task_batch}, --eval-batch {cfg.eval_batch}" + (
        f" with {at_once} tasks at once" if at_once > 1 else "")
    try:
        check_fits(what, estimate_bytes(model, example, batch, at_once), cfg.device)
    except ValueError as err:
        raise UsageError(str(err)) from err


def unsplittable(cfg: RunConfig) -> str | None:
    """Why ``cfg``'s run cannot be split over torchrun's processes (None: it can)."""
    return f"--method {cfg.method} carries one encoder from task to task" if METHODS[cfg.method].carries_model \
        else None


def train_run(cfg: RunConfig, benchmark: Benchmark, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Meta-train one method into ``out``: config.json, metrics.jsonl, checkpoints, init.safetensors."""
    main = distributed.is_main()  # under torchrun only rank 0 writes and shows progress
    trainer = MetaTrainer(cfg, benchmark)
    bar = Progress(cfg.meta_steps, cfg.method, main and trainer.trains, bar=not args.no_progress)
    try:
        # fit claims the directory (rank 0), after refusing ranks launched with other options.
        return fit(trainer, out, resume=args.resume, overwrite=args.overwrite, same_run=run_matcher(cfg),
                   checkpoint_every=args.checkpoint_every,
                   keep_checkpoints=args.keep_checkpoints,
                   max_failed_steps=args.max_failed_steps, tensorboard=args.tensorboard, on_step=bar.update,
                   log=lambda msg: print(f"{distributed.prefix()}leap: {msg}", file=sys.stderr))
    finally:
        bar.close()


def checkpoint_init(cfg: RunConfig, benchmark: Benchmark, path: Path) -> tuple[dict[str, Tensor], str]:
    """θ0 as it was at a checkpoint of the run ``cfg`` (a verified checkpoint loaded into
    a fresh trainer) and the sha256 of the init file it would have been saved as."""
    try:
        trainer = MetaTrainer(cfg, benchmark)
        trainer.load_state_dict(load_checkpoint(path))
    except CorruptFileError as err:
        raise UsageError(str(err)) from err
    except (KeyError, ValueError, RuntimeError) as err:
        raise UsageError(f"{path}: not a checkpoint of this run ({err})") from err
    init = trainer.init_state()
    return init, hashlib.sha256(init_bytes(init)).hexdigest()


def evaluate_run(cfg: RunConfig, benchmark: Benchmark, init_path: Path, split: str = "test",
                 progress: bool = False, loaded: tuple[dict[str, Tensor], str] | None = None) -> dict[str, Any]:
    """Evaluate the init at ``init_path`` (a run directory or an init file), or ``loaded``
    (θ0 and its digest, e.g. `checkpoint_init()`; ``init_path`` then names the file it came
    from in errors), on ``split``; the result names its source
    (`leap.experiments.fewshot.results.stamp()`)."""
    try:
        init, digest = loaded if loaded is not None else read_init(init_path, cfg.device)
        where = str(init_path / "init.safetensors" if init_path.is_dir() else init_path)
        check_state(init, benchmark.make_model().state_dict(), where)
    except (FileNotFoundError, CorruptFileError) as err:
        raise UsageError(str(err)) from err
    bar = TaskProgress(f"{cfg.method}: evaluate ({split} tasks)", progress and distributed.is_main())
    try:
        result = evaluate(benchmark, init, eval_loop(cfg), cfg.seed, split, fresh_heads(cfg),
                          on_tasks=bar.update, **engine_options(cfg))
    finally:
        bar.close()
    # Which protocol and which init produced the numbers travels with them.
    protocol = {name: getattr(cfg, name) for name in ("pipeline", "bn_eval") if getattr(cfg, name) is not None}
    return stamp({**result.to_dict(), **protocol}, cfg, split, digest)


def train_from_args(args: argparse.Namespace) -> int:
    """``leap train`` for a few-shot benchmark (the registry's entry point)."""
    return cmd_train(args, config_from_args(args, args.method))


def evaluate_from_args(args: argparse.Namespace) -> int:
    """``leap evaluate RUN`` of a few-shot run: its config with the command's overrides."""
    overrides = {k: v for k, v in (("eval_steps", args.eval_steps), ("seed", args.seed), ("device", args.device),
                                   ("engine", args.engine), ("compile", args.compile)) if v is not None}
    return cmd_evaluate(args, read_run_config(Path(args.run), overrides))


def cmd_train(args: argparse.Namespace, cfg: RunConfig) -> int:
    """``leap train`` for a few-shot benchmark."""
    join_workers(cfg.device, args.dist_timeout, unsplittable(cfg))
    benchmark = prepare(cfg, args.download)
    out = Path(args.out)
    cfg = resumed_config(out, cfg, args)
    check_run_dir(out, cfg, args.overwrite, extending=args.resume)
    info = train_run(cfg, benchmark, out, args)
    if distributed.is_main():
        print(f"{cfg.method}: wrote {out / 'init.safetensors'} ({info['train_seconds']:.1f} s)")
    return 0


def cmd_evaluate(args: argparse.Namespace, cfg: RunConfig) -> int:
    """``leap evaluate`` of a few-shot run (``cfg``: its config with the command's overrides)."""
    run = Path(args.run)
    join_workers(cfg.device, args.dist_timeout, unsplittable(cfg))
    benchmark = prepare(cfg)
    loaded, source, path = None, run, eval_file(run, args.split)
    if args.checkpoint is not None:  # θ0 as it was at that meta-step
        if not run.is_dir():
            raise UsageError(f"--checkpoint: {run} is not a run directory")
        ckpt = checkpoint_path(run / "checkpoints", args.checkpoint)
        if not ckpt.is_file():
            kept = [step for step, _ in list_checkpoints(run / "checkpoints")]
            raise UsageError(f"--checkpoint {args.checkpoint}: no {ckpt.name} in {run / 'checkpoints'} (it has "
                             f"{kept or 'none'}; train with --keep-checkpoints 0 to keep them all)")
        loaded, source = checkpoint_init(cfg, benchmark, ckpt), ckpt  # errors then name the checkpoint
        path = eval_file(run, args.split, meta_step=args.checkpoint)
    # Under torchrun, tasks are split over ranks.
    result = evaluate_run(cfg, benchmark, source, args.split, progress=not args.no_progress, loaded=loaded)
    if not distributed.is_main():
        return 0
    if args.checkpoint is not None:
        result["meta_step"] = args.checkpoint
    if run.is_dir():
        atomic_write_json(path, result)
    print(f"{cfg.method}: test error {100 * result['test_error']:.1f}% ± {100 * result['test_error_std']:.1f}, "
          f"AUC {100 * result['auc']:.1f}% over {len(result['test_errors'])} {args.split} tasks")
    return 0


def check_methods(methods: list[str]) -> list[str]:
    """``--methods``, each a few-shot method."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UsageError(f"--methods: unknown method(s) {unknown}; choose from {list(METHODS)}")
    return methods


def run_and_evaluate(cfg: RunConfig, benchmark: Benchmark, run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Train and evaluate one run, or read its result if it already finished with this
    config and its eval-test.json is the evaluation of this config's settings and of the
    run's init (so an interrupted compare or sweep continues where it stopped; a run cut
    off mid-way resumes from its newest checkpoint; a result of another evaluation, e.g.
    ``leap evaluate --eval-steps N``, is evaluated again, saying why)."""
    same = holds_run(run_dir, run_matcher(cfg))
    if same:
        result, why = read_result(run_dir, cfg)
        if result is not None:
            return result
        if why is not None:
            print(f"leap: {run_dir}: evaluating again: {why}", file=sys.stderr)
    resume_args = argparse.Namespace(**{**vars(args), "resume": same})
    info = train_run(cfg, benchmark, run_dir, resume_args)
    result = evaluate_run(cfg, benchmark, run_dir, progress=not args.no_progress)
    result.update(info)
    atomic_write_json(eval_file(run_dir), result)
    return result


def cmd_compare(args: argparse.Namespace) -> int:
    methods = check_methods(args.methods)
    configs = {m: config_from_args(args, m) for m in methods}
    benchmark = prepare(configs[methods[0]], args.download)
    out = Path(args.out)
    for m, cfg in configs.items():
        check_run_dir(out / m, cfg, args.overwrite)
    results = {m: run_and_evaluate(cfg, benchmark, out / m, args) for m, cfg in configs.items()}
    cfg0 = configs[methods[0]]
    table = comparison_table(results)
    header = (
        f"# Comparison on the {cfg0.benchmark} benchmark\n\n"
        f"Seed {cfg0.seed}; meta-training {cfg0.meta_steps} steps x {cfg0.meta_batch} tasks x "
        f"{cfg0.task_steps} steps; evaluation: {cfg0.eval_steps} steps (lr {cfg0.eval_lr}, batch "
        f"{cfg0.eval_batch}) on each held-out task, from each method's initialization.\n\n"
    )
    atomic_write_text(out / "results.md", header + table)
    atomic_write_json(out / "results.json", results)
    plot_curves(results, out / "curves.png", f"{BENCHMARK_NAMES.get(cfg0.benchmark, cfg0.benchmark)}: held-out tasks")
    print(table, end="")
    print(f"wrote {out / 'results.md'} and {out / 'curves.png'}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Methods x pretraining-task counts x seeds, one run directory each, finished runs skipped."""
    methods, counts, seeds = check_methods(args.methods), args.pretrain_tasks, args.seeds
    out = Path(args.out)
    plan = []
    for n in counts:
        for seed in seeds:
            for m in methods:
                run_args = argparse.Namespace(**{**vars(args), "pretrain_tasks": n, "seed": seed})
                cfg = config_from_args(run_args, m)
                plan.append((cfg, out / m / f"tasks-{n}" / f"seed-{seed}", run_args))
    benchmark = prepare(max((c for c, _, _ in plan), key=lambda c: c.pretrain_tasks), args.download)
    for cfg, run_dir, _ in plan:
        check_run_dir(run_dir, cfg, args.overwrite)
    for i, (cfg, run_dir, run_args) in enumerate(plan, 1):
        print(f"[{i}/{len(plan)}] {cfg.method}, {cfg.pretrain_tasks} pretraining tasks, seed {cfg.seed}",
              file=sys.stderr)
        result = run_and_evaluate(cfg, benchmark, run_dir, run_args)
        print(f"  test error {100 * result['test_error']:.1f}%, AUC {100 * result['auc']:.1f}%", file=sys.stderr)
    paths = write_report(out)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
