"""Appendix C: which of Leap's options matter (Figure 6)?

Leap's meta-objective has three degrees of freedom (section 2.3): the distance d_p of
eq. 3 (p = 1, the gradient path length d1; p = 2, the energy d2), the task manifold
(γ = (θ, f(θ)) with the loss, f = 1, or γ = θ, f = 0) and the stabilizer μ that replaces
Δf_i by -|Δf_i| in eq. 8. Figure 6 compares six of the combinations by the average task
training loss over meta-training; the text adds that Reptile's update rule is the
(p = 2, μ = 0, f = 0) corner and that the loss term halves prediction error. Reptile and
no pretraining are run beside them as references.

``leap ablation`` trains each configuration as an ordinary run (``run.fit``, so
checkpoints and resume come for free) into ``OUT/<name>/``, evaluates it on the held-out
tasks (``run.evaluate``: paired, every configuration sees the same data) and writes
``OUT/ablation.json``, ``OUT/ablation.md`` and ``OUT/ablation.png`` (Figure 6). Rerun the
same command after an interruption: finished configurations are skipped, an unfinished
one resumes from its newest checkpoint.

Imports no torch (the command line takes the options from here); the command imports the
few-shot runs (``leap.experiments.fewshot.commands``) when it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leap.engine.rundir import holds_run
from leap.experiments.config import RunConfig, add_run_options, check_run_dir, config_from_args, run_matcher
from leap.experiments.fewshot.report import BENCHMARK_NAMES, moving_average
from leap.experiments.fewshot.results import eval_file, read_result
from leap.experiments.methods import METHODS
from leap.util.errors import UsageError
from leap.util.files import atomic_write_json, atomic_write_text, read_json_record, read_jsonl, save_figure
from leap.util.options import Option, comma_list

HELP = "appendix C: Figure 6's six Leap configurations and Reptile, trained and evaluated alike"
BENCHMARKS = ("omniglot", "builtin")
# Appendix C's protocol: 20 pretraining tasks, 500 meta-steps, all else as in appendix D.
PAPER_META_STEPS = 500
PAPER_PRETRAIN_TASKS = 20
# RunConfig fields that differ between configurations (the rest is the shared protocol).
PER_CONFIG_FIELDS = ("method", "metric", "stabilizer", "loss_in_manifold", "meta_lr", "extra")


@dataclass(frozen=True)
class AblationConfig:
    """One line of Figure 6: a meta-learner and its meta-gradient options.

    ``metric`` is d_p (``"length"``: p = 1, ``"energy"``: p = 2), ``stabilizer`` is μ,
    ``loss_in_manifold`` is f. For Reptile and no pretraining the three are unused.
    """

    name: str
    label: str
    method: str
    metric: str = "length"
    stabilizer: bool = True
    loss_in_manifold: bool = True

    @property
    def p(self) -> int | None:
        """The exponent of d_p in eq. 3 (None for Reptile and no pretraining)."""
        if self.method != "leap":
            return None
        return 1 if self.metric == "length" else 2

    def run_config(self, base: RunConfig) -> RunConfig:
        """``base`` (already resolved for ``self.method``) with this configuration's
        Leap options, checked again."""
        if base.method != self.method:
            raise ValueError(f"{self.name}: base config is for method {base.method!r}, not {self.method!r}")
        cfg = dataclasses.replace(base, metric=self.metric, stabilizer=self.stabilizer,
                                  loss_in_manifold=self.loss_in_manifold)
        cfg.validate()
        return cfg


def _leap(metric: str, stabilizer: bool, loss: bool) -> AblationConfig:
    p = 1 if metric == "length" else 2
    mu, f = int(stabilizer), int(loss)
    return AblationConfig(f"leap-p{p}-mu{mu}-f{f}", f"p={p}, μ={mu}, f={f}", "leap", metric, stabilizer, loss)


# Figure 6's legend order, then Reptile, then no pretraining (the random initialization
# every run starts from: a reference for the test errors, costs one evaluation).
# (p=1, μ=1, f=1) is Leap as used in the paper's experiments; (p=2, μ=0, f=0) has
# Reptile's update direction θ0 - θ_K.
ABLATION_CONFIGS: tuple[AblationConfig, ...] = (
    _leap("energy", False, True),
    _leap("energy", True, True),
    _leap("energy", False, False),
    _leap("length", False, True),
    _leap("length", True, True),
    _leap("length", False, False),
    AblationConfig("reptile", "Reptile", "reptile"),
    AblationConfig("none", "No pretraining", "none"),
)
CONFIGS_BY_NAME = {c.name: c for c in ABLATION_CONFIGS}


def select_configs(names: Sequence[str] | str | None) -> list[AblationConfig]:
    """The configurations ``names`` (a list, or a comma-separated string; None or "all":
    every one), in Figure 6's order. Raises ``ValueError`` for an unknown name."""
    if isinstance(names, str):
        names = comma_list()(names)
    if names is None or list(names) == ["all"]:
        return list(ABLATION_CONFIGS)
    wanted = list(names)
    unknown = [n for n in wanted if n not in CONFIGS_BY_NAME]
    if unknown or not wanted:
        raise ValueError(f"--configs: unknown configuration(s) {unknown}; choose from {list(CONFIGS_BY_NAME)}")
    return [c for c in ABLATION_CONFIGS if c.name in wanted]


# ---------------------------------------------------------------------- results
def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The per-meta-step records of a run (metrics.jsonl), in step order."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return read_jsonl(path)


def summarize(config: AblationConfig, run_dir: Path, evaluation: dict[str, Any],
              meta_lr: float | None = None) -> dict[str, Any]:
    """One configuration's row: its options, held-out test error and AUC, and the
    average task training loss over meta-training (Figure 6's quantity)."""
    records = read_metrics(run_dir)
    losses = [r["train_loss"] for r in records]
    tail = max(1, len(losses) // 10)
    return {
        "name": config.name, "label": config.label, "method": config.method, "p": config.p,
        "meta_lr": meta_lr,
        "stabilizer": config.stabilizer if config.method == "leap" else None,
        "loss_in_manifold": config.loss_in_manifold if config.method == "leap" else None,
        "meta_steps": len(losses),
        "train_loss_first": sum(losses[:tail]) / tail if losses else None,
        "train_loss_last": sum(losses[-tail:]) / tail if losses else None,
        "train_loss_mean": sum(losses) / len(losses) if losses else None,
        "test_error": evaluation["test_error"], "test_error_std": evaluation["test_error_std"],
        "test_errors": evaluation["test_errors"], "auc": evaluation["auc"],
        # Compute time of meta-training summed over sessions (resumes included).
        "train_seconds": sum(r.get("seconds", 0.0) for r in records),
        "eval_seconds": evaluation.get("eval_seconds"),
    }


def paired_difference(row: dict[str, Any], reference: dict[str, Any] | None) -> str:
    """Mean per-task test-error difference ``row - reference`` in percentage points,
    ± its standard error, as a table cell ("-" for the reference itself or without one)."""
    if reference is None or row is reference or "test_errors" not in row or "test_errors" not in reference:
        return "-"
    diffs = [100 * (a - b) for a, b in zip(row["test_errors"], reference["test_errors"], strict=True)]
    mean = sum(diffs) / len(diffs)
    if len(diffs) < 2:
        return f"{mean:+.1f}"
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs))
    return f"{mean:+.1f} ± {se:.1f}"


def write_ablation_report(directory: str | Path, window: int | None = None) -> list[Path]:
    """ablation.md (table) and ablation.png (Figure 6) from ``directory``/ablation.json
    and each configuration's metrics.jsonl. Returns the paths written."""
    directory = Path(directory)
    result = read_json_record(directory / "ablation.json", ("configs", "protocol"))
    rows = result["configs"]
    proto = result["protocol"]
    meta_lrs = ", ".join(sorted({f"{r['meta_lr']:g}" for r in rows if r.get("meta_lr") is not None})) or "-"
    lines = [
        f"# Appendix C ablation on the {proto['benchmark']} benchmark",
        "",
        f"Meta-training: {proto['meta_steps']} meta-steps x {proto['meta_batch']} tasks x {proto['task_steps']} "
        f"steps (inner lr {proto['inner_lr']}, batch {proto['task_batch']}), {proto['pretrain_tasks']} pretraining "
        f"tasks, meta lr {meta_lrs}, seed {proto['seed']}. Evaluation: {proto['eval_steps']} steps "
        f"(lr {proto['eval_lr']}, batch {proto['eval_batch']}) on each held-out task, same data for every row.",
        "",
        "Training loss: the average task training loss of a meta-step (mean over its tasks and inner steps), "
        "averaged over the first and the last 10% of meta-steps and over all of them (Figure 6's curve).",
        "",
        "Test error: mean ± std over the held-out tasks; vs Reptile, vs none: the mean per-task difference "
        "from the test error of Reptile or of no pretraining (paired: same tasks, minibatches and heads), "
        "in percentage points, ± its standard error.",
        "",
        "| Configuration | p | μ | f | Test error (%) | vs Reptile | vs none | AUC (%) | Train loss, first 10% "
        "| Train loss, last 10% | Train loss, mean | Meta-train (s) | Eval (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    reptile = next((r for r in rows if r["name"] == "reptile"), None)
    none = next((r for r in rows if r["name"] == "none"), None)

    def cell(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    for r in rows:
        flags = ["-", "-", "-"] if r["p"] is None else [str(r["p"]), str(int(r["stabilizer"])),
                                                          str(int(r["loss_in_manifold"]))]
        lines.append(
            f"| {r['label']} | {' | '.join(flags)} | {100 * r['test_error']:.1f} ± {100 * r['test_error_std']:.1f} "
            f"| {paired_difference(r, reptile)} | {paired_difference(r, none)} "
            f"| {100 * r['auc']:.1f} | {cell(r['train_loss_first'], '.3f')} | {cell(r['train_loss_last'], '.3f')} "
            f"| {cell(r['train_loss_mean'], '.3f')} | {r['train_seconds']:.0f} | {cell(r['eval_seconds'], '.0f')} |"
        )
    md = directory / "ablation.md"
    atomic_write_text(md, "\n".join(lines) + "\n")
    curves = {r["label"]: [m["train_loss"] for m in read_metrics(directory / r["name"])] for r in rows}
    return [md, plot_figure6(curves, directory / "ablation.png", proto, window)]


def plot_figure6(curves: dict[str, list[float]], path: Path, protocol: dict[str, Any],
                 window: int | None = None) -> Path:
    """Figure 6: average task training loss against meta-training steps, moving average
    over ``window`` meta-steps (default: a tenth of the run, at least 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    longest = max((len(c) for c in curves.values()), default=1)
    window = window or max(1, longest // 10)
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    for label, values in curves.items():
        if not values:
            continue
        style = "--" if label == "Reptile" else "-"
        ax.plot(range(1, len(values) + 1), moving_average(values, window), style, label=label)
    ax.set_xlabel("meta-training step")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(f"average task training loss (moving average {window})")
    benchmark = BENCHMARK_NAMES.get(protocol["benchmark"], protocol["benchmark"])
    ax.set_title(f"{benchmark}: {protocol['pretrain_tasks']} pretraining tasks, "
                 f"{protocol['meta_batch']} x {protocol['task_steps']} steps per meta-step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------- command line
def add_options(p: argparse.ArgumentParser) -> None:
    """Options of ``leap ablation``: the run options of ``leap train`` (the Leap options
    among them are set per configuration) and the configurations to run."""
    Option("out", "output directory (one run directory per configuration)", required=True).add_to(p)
    Option("configs", f"comma-separated subset of {', '.join(CONFIGS_BY_NAME)} (default: all)", comma_list(),
           default="all").add_to(p)
    add_run_options(p, "ablation")  # the shared run options; no experiment adds its own here
    # Appendix C's protocol, and checkpoints often enough that an interrupted ablation
    # loses little (a rerun of the same command resumes; --resume is implied).
    p.set_defaults(meta_steps=PAPER_META_STEPS, pretrain_tasks=PAPER_PRETRAIN_TASKS, checkpoint_every=25)


def collect_rows(out: Path, protocol: dict[str, Any]) -> list[dict[str, Any]]:
    """A row per configuration whose run directory in ``out`` is finished (config.json and
    eval-test.json) and was run under ``protocol``, in Figure 6's order. Built from the
    run directories, so ablations of disjoint ``--configs`` (even at the same time) all
    end up in one table. Fields a run's config.json lacks (added to RunConfig after it
    ran) are not compared."""
    rows = []
    for config in ABLATION_CONFIGS:
        run_dir = out / config.name
        try:
            cfg = json.loads((run_dir / "config.json").read_text())
            evaluation, _ = read_result(run_dir, RunConfig.from_dict(cfg).resolved())
        except (OSError, ValueError, TypeError, AttributeError):
            continue
        if evaluation is None or cfg.get("method") != config.method or any(
                cfg[k] != v for k, v in protocol.items() if k in cfg):
            continue
        meta_lr = cfg.get("meta_lr") if METHODS[config.method].has_learner else None
        rows.append(summarize(config, run_dir, evaluation, meta_lr))
    return rows


def cmd_ablation(args: argparse.Namespace) -> int:
    from leap.experiments.fewshot.commands import evaluate_run, prepare, train_run

    if args.benchmark not in BENCHMARKS:
        raise UsageError(f"--benchmark {args.benchmark}: the ablation runs on {' or '.join(BENCHMARKS)}")
    try:
        chosen = select_configs(args.configs)
        configs = {c.name: c.run_config(config_from_args(args, c.method)) for c in chosen}
    except ValueError as err:
        raise UsageError(str(err)) from err
    first = configs[chosen[0].name]
    benchmark = prepare(first)
    out = Path(args.out)
    for name, cfg in configs.items():
        check_run_dir(out / name, cfg, args.overwrite)
    log = lambda msg: print(f"leap: {msg}", file=sys.stderr)  # noqa: E731
    # What every configuration shares; the meta learning rate is Table 3's per method.
    protocol = {k: v for k, v in first.to_dict().items() if k not in PER_CONFIG_FIELDS}
    for config in chosen:
        cfg = configs[config.name]
        run_dir = out / config.name
        eval_path = eval_file(run_dir)
        same = holds_run(run_dir, run_matcher(cfg))
        if same and read_result(run_dir, cfg)[0] is not None:
            log(f"{config.name}: finished earlier, skipped")
        else:
            if not same and eval_path.exists():
                eval_path.unlink()  # belongs to the run --overwrite replaces
            # Same configuration: continue from its newest checkpoint; otherwise start afresh.
            run_args = argparse.Namespace(**{**vars(args), "resume": same})
            log(f"{config.name}: meta-training ({config.label})")
            train_run(cfg, benchmark, run_dir, run_args)
            start = time.perf_counter()
            evaluation = evaluate_run(cfg, benchmark, run_dir / "init.safetensors", progress=not args.no_progress)
            evaluation["eval_seconds"] = time.perf_counter() - start
            atomic_write_json(eval_path, evaluation)
        atomic_write_json(out / "ablation.json", {"protocol": protocol, "configs": collect_rows(out, protocol)})
        write_ablation_report(out)
    print((out / "ablation.md").read_text(), end="")
    print(f"wrote {out / 'ablation.json'}, {out / 'ablation.md'} and {out / 'ablation.png'}")
    return 0
