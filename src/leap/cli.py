"""Command line: ``leap train | evaluate | compare`` (also ``python -m leap``).

Every option is checked before any work is done; bad input exits with status 2 and
one line on stderr.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from leap import distributed
from leap.checkpoint import CorruptFileError, atomic_write_json, load_init
from leap.config import BENCHMARK_DEFAULTS, METHODS, OMNIGLOT_CHOICES, RunConfig
from leap.multicv_run import METHODS as MULTICV_METHODS
from leap.multicv_run import add_multicv_options, sweep_from_args, train_from_args, write_multicv_report
from leap.report import comparison_table, plot_curves, write_report
from leap.rl.commands import add_rl_eval_parser, rl_evaluate, train_rl
from leap.rl.options import RL_BENCHMARKS, add_rl_options, extra_from_args
from leap.run import MetaTrainer, RunStopped, build_benchmark, engine_options, eval_loop, evaluate, fit, fresh_head
from leap.tasks import Benchmark

CONFIG_FIELDS = (
    "benchmark", "seed", "meta_steps", "meta_batch", "task_steps", "task_batch", "inner_lr", "inner_optimizer",
    "meta_lr", "meta_optimizer", "maml_steps", "pretrain_tasks", "eval_steps", "eval_batch", "eval_lr",
    "val_every", "metric", "loss_in_manifold", "stabilizer", "pipeline", "bn_eval", "device", "data_dir",
    "engine", "compile", "max_tasks_per_chunk",
)


class UsageError(Exception):
    """Bad input: reported as one line, exit status 2."""


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_run_options(p: argparse.ArgumentParser, per_run: bool = True) -> None:
    """Options shared by train, compare and sweep (None = the benchmark's default).
    ``per_run=False`` (sweep) leaves out --seed and --pretrain-tasks, which sweep lists."""
    p.add_argument("--benchmark", default="builtin", choices=sorted([*BENCHMARK_DEFAULTS, "multicv"]),
                   help="task family (default: builtin, needs no download)")
    if per_run:
        p.add_argument("--seed", type=int, default=0)
    p.add_argument("--meta-steps", type=int, help="meta-training steps")
    p.add_argument("--meta-batch", type=int, help="tasks per meta-step")
    p.add_argument("--task-steps", type=int, help="inner steps per task in meta-training")
    p.add_argument("--task-batch", type=int, help="samples per inner step")
    p.add_argument("--inner-lr", type=float, help="inner (task) learning rate")
    p.add_argument("--inner-optimizer", choices=["sgd", "adam", "rmsprop"],
                   help="default: sgd (atari, minatar: rmsprop as in appendix F)")
    p.add_argument("--meta-lr", type=float, help="meta learning rate (default: Table 3's per method)")
    p.add_argument("--meta-optimizer", default="sgd", choices=["sgd", "adam"])
    p.add_argument("--maml-steps", type=int, help="MAML's differentiated inner steps in meta-training")
    if per_run:
        p.add_argument("--pretrain-tasks", type=int, help="number of pretraining task sources")
    p.add_argument("--eval-steps", type=int, help="training steps on each held-out task")
    p.add_argument("--eval-batch", type=int)
    p.add_argument("--eval-lr", type=float)
    p.add_argument("--val-every", type=int, help="validate every M meta-steps (0: never)")
    p.add_argument("--metric", choices=["length", "energy"],
                   help="Leap: d1 or d2 (default: length; atari, minatar: energy as in section 4.3)")
    p.add_argument("--loss-in-manifold", type=_bool, default=True, help="Leap: γ = (θ, f(θ))")
    p.add_argument("--stabilizer", type=_bool, default=True, help="Leap: use the stabilizer μ")
    p.add_argument("--pipeline", choices=OMNIGLOT_CHOICES["pipeline"],
                   help="omniglot: image pipeline; released (default): the authors' code (nearest-neighbour "
                        "resize, not inverted, nearest augmentation, batch-norm scales U(0, 1)); smooth: Lanczos, "
                        "inverted, bilinear, scales 1")
    p.add_argument("--bn-eval", choices=OMNIGLOT_CHOICES["bn_eval"],
                   help="omniglot: classify test images with batch norm's running statistics of the task's "
                        "training (default, non-transductive) or with the test batch's own (transductive)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--data-dir", help="dataset directory (benchmarks that read data)")
    add_engine_options(p)
    p.add_argument("--max-tasks-per-chunk", type=int,
                   help="batched engine: most tasks trained at once (default: the whole meta-batch, halved on "
                        "CUDA out-of-memory)")
    p.add_argument("--download", action="store_true",
                   help="omniglot: fetch the official archives into --data-dir if they are missing")
    p.add_argument("--overwrite", action="store_true", help="replace an output directory holding another run")
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint in --out")
    p.add_argument("--checkpoint-every", type=int, default=0, help="checkpoint every M meta-steps (0: only at the end)")
    p.add_argument("--max-failed-steps", type=int, default=10,
                   help="stop after R consecutive meta-steps in which every task was non-finite")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_rl_options(p)


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


def check_device(device: str) -> None:
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise UsageError(f"--device {device}: not a device (use cpu, cuda or cuda:N)") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise UsageError(f"--device {device}: only cpu and cuda are supported")


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


def check_out_dir(out: Path, cfg: RunConfig, overwrite: bool) -> None:
    """Refuse a directory that holds a different run (unless ``overwrite``) or is unwritable."""
    config_path = out / "config.json"
    if config_path.exists() and not overwrite:
        if not holds_run(out, cfg):
            raise UsageError(f"{out} holds a different run (its config.json differs); use --overwrite to replace it")
    elif out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a directory")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{out}: {probe} is not a directory")
    try:  # the only reliable test of writability (root ignores permission bits)
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        raise UsageError(f"{out}: not writable ({err.strerror})") from err


class Progress:
    """A tqdm bar when available and wanted, otherwise a line every 10%."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self.bar = None
        self.total, self.desc, self.enabled, self.n = total, desc, enabled, 0
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc=desc, dynamic_ncols=True, file=sys.stderr)
            except ImportError:
                pass

    def update(self, metrics: dict[str, Any]) -> None:
        self.n += 1
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{metrics['train_loss']:.3f}", err=f"{metrics['train_error']:.3f}")
            self.bar.update(1)
        elif self.enabled and (self.n == self.total or self.n % max(1, self.total // 10) == 0):
            print(f"{self.desc}: {self.n}/{self.total} loss {metrics['train_loss']:.3f}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def prepare(cfg: RunConfig, download: bool = False) -> Benchmark:
    """Check what depends on the machine and the data, before any output is written."""
    if cfg.benchmark in RL_BENCHMARKS:
        raise UsageError(f"--benchmark {cfg.benchmark}: use leap train, then leap rl-eval on the run")
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
    return benchmark


DISTRIBUTED_COMMANDS = ("train", "evaluate")


def join_workers(cfg: RunConfig, args: argparse.Namespace) -> None:
    """Under torchrun, join the other processes before any data lands on a device
    (``--device cuda`` then means this process's GPU, cuda:LOCAL_RANK)."""
    if not args.dist_timeout > 0:
        raise UsageError(f"--dist-timeout must be > 0 seconds, got {args.dist_timeout}")
    if not distributed.launched():
        return
    if cfg.method == "finetune":
        raise UsageError("--method finetune carries one encoder from task to task and cannot be split over "
                         "processes: run it without torchrun")
    check_device(cfg.device)
    try:
        distributed.setup(cfg.device, args.dist_timeout)
    except ValueError as err:
        raise UsageError(str(err)) from err


def train_run(cfg: RunConfig, benchmark: Benchmark, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Meta-train one method into ``out``: config.json, metrics.jsonl, checkpoints, init.safetensors."""
    main = distributed.is_main()  # under torchrun only rank 0 writes and shows progress
    if main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "config.json", cfg.to_dict())
    trainer = MetaTrainer(cfg, benchmark)
    bar = Progress(cfg.meta_steps, cfg.method, main and not args.no_progress and trainer.trains)
    try:
        return fit(trainer, out, resume=args.resume, checkpoint_every=args.checkpoint_every,
                   max_failed_steps=args.max_failed_steps, on_step=bar.update,
                   log=lambda msg: print(f"{distributed.prefix()}leap: {msg}", file=sys.stderr))
    finally:
        bar.close()


def evaluate_run(cfg: RunConfig, benchmark: Benchmark, init_path: Path, split: str = "test") -> dict[str, Any]:
    try:
        init = load_init(init_path, cfg.device)
    except (FileNotFoundError, CorruptFileError) as err:
        raise UsageError(str(err)) from err
    result = evaluate(benchmark, init, eval_loop(cfg), cfg.seed, split, fresh_head(cfg.method), **engine_options(cfg))
    # Which protocol produced the numbers travels with them.
    protocol = {name: getattr(cfg, name) for name in ("pipeline", "bn_eval") if getattr(cfg, name) is not None}
    return {**result.to_dict(), **protocol}


# ---------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> int:
    if args.benchmark == "multicv":
        return train_from_args(args)  # its own protocol (appendix E): leap.multicv_run
    cfg = config_from_args(args, args.method)
    if cfg.benchmark in RL_BENCHMARKS:
        return train_rl(cfg, args)  # games, not datasets: leap.rl.commands
    join_workers(cfg, args)
    benchmark = prepare(cfg, args.download)
    out = Path(args.out)
    check_out_dir(out, cfg, args.overwrite)
    info = train_run(cfg, benchmark, out, args)
    if distributed.is_main():
        print(f"{cfg.method}: wrote {out / 'init.safetensors'} ({info['train_seconds']:.1f} s)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    run = Path(args.run)
    config_path = (run if run.is_dir() else run.parent) / "config.json"
    if not config_path.is_file():
        raise UsageError(f"{config_path}: no config.json beside the initialization")
    try:
        cfg = RunConfig.from_dict(json.loads(config_path.read_text()))
        overrides = {k: v for k, v in (("eval_steps", args.eval_steps), ("seed", args.seed),
                                       ("device", args.device), ("engine", args.engine),
                                       ("compile", args.compile)) if v is not None}
        cfg = RunConfig.from_dict({**cfg.to_dict(), **overrides}).resolved()
    except (ValueError, TypeError) as err:
        raise UsageError(f"{config_path}: {err}") from err
    if cfg.benchmark in RL_BENCHMARKS:  # learned vs random encoder, curves of returns
        rl_evaluate(run, eval_steps=args.eval_steps, device=args.device,
                    seeds=None if args.seed is None else [args.seed])
        return 0
    join_workers(cfg, args)
    result = evaluate_run(cfg, prepare(cfg), run, args.split)  # under torchrun, tasks are split over ranks
    if not distributed.is_main():
        return 0
    if run.is_dir():
        atomic_write_json(run / f"eval-{args.split}.json", result)
    print(f"{cfg.method}: test error {100 * result['test_error']:.1f}% ± {100 * result['test_error_std']:.1f}, "
          f"AUC {100 * result['auc']:.1f}% over {len(result['test_errors'])} {args.split} tasks")
    return 0


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise UsageError(f"--methods: unknown method(s) {unknown}; choose from {list(METHODS)}")
    return methods


def parse_ints(option: str, text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise UsageError(f"{option}: expected comma-separated integers, got {text!r}") from err
    if not values:
        raise UsageError(f"{option}: no value given")
    return values


def run_and_evaluate(cfg: RunConfig, benchmark: Benchmark, run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Train and evaluate one run, or read its result if it already finished with this
    config (so an interrupted compare or sweep continues where it stopped; a run cut off
    mid-way resumes from its newest checkpoint)."""
    result_path = run_dir / "eval-test.json"
    config_path = run_dir / "config.json"
    same = config_path.is_file() and holds_run(run_dir, cfg)
    if same and result_path.is_file():
        return json.loads(result_path.read_text())
    resume_args = argparse.Namespace(**{**vars(args), "resume": same})
    info = train_run(cfg, benchmark, run_dir, resume_args)
    result = evaluate_run(cfg, benchmark, run_dir)
    result.update(info)
    atomic_write_json(result_path, result)
    return result


def cmd_compare(args: argparse.Namespace) -> int:
    if args.benchmark == "multicv":
        raise UsageError("compare does not run multicv; use leap sweep --benchmark multicv [--held-out A,B]")
    methods = parse_methods(args.methods)
    configs = {m: config_from_args(args, m) for m in methods}
    benchmark = prepare(configs[methods[0]], args.download)
    out = Path(args.out)
    for m, cfg in configs.items():
        check_out_dir(out / m, cfg, args.overwrite)
    results = {m: run_and_evaluate(cfg, benchmark, out / m, args) for m, cfg in configs.items()}
    cfg0 = configs[methods[0]]
    table = comparison_table(results)
    header = (
        f"# Comparison on the {cfg0.benchmark} benchmark\n\n"
        f"Seed {cfg0.seed}; meta-training {cfg0.meta_steps} steps x {cfg0.meta_batch} tasks x "
        f"{cfg0.task_steps} steps; evaluation: {cfg0.eval_steps} steps (lr {cfg0.eval_lr}, batch "
        f"{cfg0.eval_batch}) on each held-out task, from each method's initialization.\n\n"
    )
    (out / "results.md").write_text(header + table)
    atomic_write_json(out / "results.json", results)
    plot_curves(results, out / "curves.png", f"{cfg0.benchmark}: held-out tasks")
    print(table, end="")
    print(f"wrote {out / 'results.md'} and {out / 'curves.png'}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Methods x pretraining-task counts x seeds, one run directory each, finished runs skipped."""
    if args.benchmark == "multicv":
        return sweep_from_args(args)  # held-out datasets x methods x seeds: leap.multicv_run
    methods = parse_methods(args.methods or "leap,reptile,fomaml,maml,finetune,none")
    counts = parse_ints("--pretrain-tasks", args.pretrain_tasks)
    seeds = parse_ints("--seeds", args.seeds or "0,1,2")
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
        check_out_dir(run_dir, cfg, args.overwrite)
    for i, (cfg, run_dir, run_args) in enumerate(plan, 1):
        print(f"[{i}/{len(plan)}] {cfg.method}, {cfg.pretrain_tasks} pretraining tasks, seed {cfg.seed}",
              file=sys.stderr)
        result = run_and_evaluate(cfg, benchmark, run_dir, run_args)
        print(f"  test error {100 * result['test_error']:.1f}%, AUC {100 * result['auc']:.1f}%", file=sys.stderr)
    paths = write_report(out)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    out = Path(args.dir)
    if not out.is_dir():
        raise UsageError(f"{out}: no such directory")
    from leap.analysis import write_analysis_report  # appendix B and C directories
    from leap.rl.report import RESULT_FILE, write_rl_report  # leap rl-eval directories (Figure 4)

    paths = write_analysis_report(out) or write_report(out) or write_multicv_report(out)
    if (out / RESULT_FILE).is_file():
        paths = [*paths, *write_rl_report(out)]
    if not paths:
        raise UsageError(f"{out}: no finished runs (eval-test.json, or multicv's result.json, beside config.json, "
                         "or rl-eval.json) found")
    for path in paths:
        print(f"wrote {path}")
    return 0


def add_engine_options(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    """--engine and --compile (leap.engine.batched); ``default`` None keeps a run's own."""
    p.add_argument("--engine", default=default, choices=["auto", "batched", "sequential"],
                   help="train a meta-batch's tasks all at once (batched) or one by one (sequential); auto: "
                        "batched on CUDA, sequential on CPU; MAML and finetuning always train sequentially")
    p.add_argument("--compile", type=_bool, default=None,
                   help="batched engine: torch.compile the inner step (default: on for CUDA, off on CPU)")


def add_dist_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dist-timeout", type=float, default=distributed.DEFAULT_TIMEOUT_S, metavar="SECONDS",
                   help="under torchrun: how long a rank waits for the others at a collective before failing "
                        f"(default {distributed.DEFAULT_TIMEOUT_S:g})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leap", description="Meta-learn initializations with Leap (ICLR 2019).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="meta-train one method, write init.safetensors")
    p.add_argument("--method", default="leap", choices=list(dict.fromkeys([*METHODS, *MULTICV_METHODS])),
                   help="hat and progressive: --benchmark multicv only")
    p.add_argument("--out", required=True, help="output directory")
    add_run_options(p)
    add_multicv_options(p)
    add_dist_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="train held-out tasks from a learned initialization")
    p.add_argument("run", help="run directory (or its init.safetensors)")
    p.add_argument("--split", default="test", choices=["test", "val"])
    p.add_argument("--eval-steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device")
    add_engine_options(p, default=None)
    add_dist_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("sweep", help="methods x pretraining-task counts x seeds, then the report")
    p.add_argument("--methods", help="comma-separated methods (default: leap,reptile,fomaml,maml,finetune,none; "
                   "multicv: leap,finetune,progressive,hat,none)")
    p.add_argument("--out", required=True, help="sweep directory (runs go to OUT/METHOD/tasks-N/seed-S)")
    add_run_options(p, per_run=False)
    add_multicv_options(p)
    p.add_argument("--pretrain-tasks", default="1,3,5,10,15,20,25", help="comma-separated counts (Table 2's rows)")
    p.add_argument("--seeds", help="comma-separated seeds (default: 0,1,2; multicv: 0)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="tables and figures of a sweep, compare, ablation or jacobian directory")
    p.add_argument("dir", help="a directory written by sweep, compare, ablation or jacobian")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="meta-train and evaluate several methods, one table and plot")
    p.add_argument("--methods", default="leap,reptile,fomaml,none", help="comma-separated methods")
    p.add_argument("--out", required=True, help="output directory")
    add_run_options(p)
    p.set_defaults(func=cmd_compare)

    add_rl_eval_parser(sub)  # leap rl-eval: RL runs (atari, minatar)

    # Appendices B and C; imported here because they build on this module's helpers.
    from leap.analysis import ablation, jacobian

    p = sub.add_parser("ablation", help=ablation.HELP)
    ablation.add_options(p)
    p.set_defaults(func=ablation.cmd_ablation)

    p = sub.add_parser("jacobian", help=jacobian.HELP)
    jacobian.add_options(p)
    p.set_defaults(func=jacobian.cmd_jacobian)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if distributed.launched():
        # A rank killed by a signal (e.g. SIGABRT from a native library) then leaves the
        # Python stacks of all its threads on stderr, so the failure can be diagnosed.
        faulthandler.enable()
    try:
        if distributed.launched() and args.command not in DISTRIBUTED_COMMANDS:
            raise UsageError(f"{args.command} runs in a single process; under torchrun use "
                             f"{' or '.join(DISTRIBUTED_COMMANDS)}")
        code = args.func(args)
        # Leave together: a rank that tears its process group down while a peer is still
        # finishing its last collective makes gloo abort that peer (SIGABRT at exit).
        distributed.barrier()
        return code
    except UsageError as err:
        print(f"{distributed.prefix()}leap: error: {err}", file=sys.stderr)
        return 2
    except RunStopped as err:
        print(f"{distributed.prefix()}leap: {err}", file=sys.stderr)
        return err.exit_code
    except distributed.DistributedError as err:
        print(f"leap: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("leap: interrupted", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
