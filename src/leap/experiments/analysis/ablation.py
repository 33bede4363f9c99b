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

from leap.engine.rundir import holds_run, meta_training_seconds
from leap.experiments.config import RunConfig, add_run_options, check_run_dir, config_from_args, run_matcher
from leap.experiments.fewshot.report import BENCHMARK_NAMES, moving_average
from leap.experiments.fewshot.results import eval_file, read_result
from leap.experiments.methods import METHODS
from leap.util.errors import UsageError
from leap.util.files import atomic_write_json, atomic_write_text, read_json_record, read_jsonl, save_figure
from leap.util.options import Option, comma_list
from leap.util.stats import format_ci, interval_sign, interval_verdict

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
        "train_seconds": meta_training_seconds(records),
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


# ---------------------------------------------------------------------- several seeds
#: Leap as used in the paper's experiments, and the corner with Reptile's update direction.
FULL, REPTILE_CORNER = "leap-p1-mu1-f1", "leap-p2-mu0-f0"
#: (with the loss in the manifold, without it) at equal p and μ: appendix C's f = 1 / f = 0 pairs.
MANIFOLD_PAIRS = (("leap-p1-mu0-f1", "leap-p1-mu0-f0"), ("leap-p2-mu0-f1", "leap-p2-mu0-f0"))
#: (without the stabilizer, with it) at equal p and f = 1: appendix C's μ = 0 / μ = 1 pairs.
STABILIZER_PAIRS = (("leap-p2-mu0-f1", "leap-p2-mu1-f1"), ("leap-p1-mu0-f1", "leap-p1-mu1-f1"))
#: (the energy d2, the length d1) at equal μ and f: appendix C's p = 2 / p = 1 pairs.
METRIC_PAIRS = (("leap-p2-mu0-f1", "leap-p1-mu0-f1"), ("leap-p2-mu1-f1", "leap-p1-mu1-f1"),
                ("leap-p2-mu0-f0", "leap-p1-mu0-f0"))


def seed_directories(directory: str | Path) -> list[Path]:
    """The subdirectories of ``directory`` that hold an ablation (ablation.json), one per seed."""
    return sorted(d for d in Path(directory).iterdir() if (d / "ablation.json").is_file())


def read_seed_ablations(directory: str | Path) -> tuple[dict[str, Any], dict[int, dict[str, dict[str, Any]]]]:
    """(the shared protocol without its seed, {seed: {configuration name: row}}) of the
    ablations in ``directory``'s subdirectories. Raises ``UsageError`` when two of them ran
    different protocols or the same seed: their rows cannot be paired."""
    protocol: dict[str, Any] | None = None
    first: Path | None = None
    by_seed: dict[int, dict[str, dict[str, Any]]] = {}
    for sub in seed_directories(directory):
        result = read_json_record(sub / "ablation.json", ("configs", "protocol"))
        proto = {k: v for k, v in result["protocol"].items() if k != "seed"}
        seed = result["protocol"]["seed"]
        if protocol is None:
            protocol, first = proto, sub
        elif proto != protocol:
            differ = sorted(k for k in {*proto, *protocol} if proto.get(k) != protocol.get(k))
            raise UsageError(f"{first} and {sub} ran different protocols ({', '.join(differ)}): "
                             "their ablations cannot be paired")
        if seed in by_seed:
            raise UsageError(f"{sub}: seed {seed} appears twice in {directory}")
        by_seed[seed] = {r["name"]: {**r, "run_dir": str(sub / r["name"])} for r in result["configs"]}
    return protocol or {}, by_seed


def _paired(by_seed: dict[int, dict[str, dict[str, Any]]], a: str, b: str, key: str) -> list[float]:
    """``row[a][key] - row[b][key]`` for every seed that has both (the same tasks and data);
    a value a run lacks (no pretraining has no training loss) pairs with nothing."""
    return [rows[a][key] - rows[b][key] for _, rows in sorted(by_seed.items())
            if a in rows and b in rows and rows[a].get(key) is not None and rows[b].get(key) is not None]


def _paired_by_task(by_seed: dict[int, dict[str, dict[str, Any]]], a: str, b: str) -> list[float]:
    """Per-task test-error differences ``a - b`` in points over every (seed, held-out task)."""
    return [100 * (x - y) for _, rows in sorted(by_seed.items()) if a in rows and b in rows
            for x, y in zip(rows[a]["test_errors"], rows[b]["test_errors"], strict=True)]


def configurations_run(by_seed: dict[int, dict[str, dict[str, Any]]]) -> list[str]:
    """The names of the configurations run in at least one seed, in Figure 6's order."""
    return [c.name for c in ABLATION_CONFIGS if any(c.name in rows for rows in by_seed.values())]


def _ci(values: list[float], digits: int = 1) -> str:
    return format_ci(values, digits) if values else "-"


def _against(differences: list[float], point: float) -> str:
    """Where the 95% interval of the mean of ``differences`` lies against an effect of size
    ``point`` (a negative difference, the paper's claimed reduction)."""
    side = interval_sign([d - point for d in differences])
    if side is None:
        return "cannot be told from 1 seed"
    return ("excluded, the interval lies above it" if side > 0 else
            "exceeded, the interval lies below it" if side < 0 else "within the interval")


def ablation_claims(by_seed: dict[int, dict[str, dict[str, Any]]]) -> list[str]:
    """One sentence per claim of appendix C, read off the 95% intervals over seeds of the
    paired differences (each seed's configurations share their tasks and data)."""
    names = configurations_run(by_seed)
    label = {c.name: c.label for c in ABLATION_CONFIGS}
    sentences = []

    def judge(claim: str, pairs: dict[str, list[float]], good: int, fails: str, passes: str) -> str:
        """``claim``: holds when every pair's interval lies on side ``good`` of 0, does not
        hold when one lies on the other side, and cannot be told otherwise. ``pairs`` maps
        the name each difference is reported under to its values over seeds."""
        if not pairs:
            return f"- {claim}: cannot be told (not run)."
        signs = {other: interval_sign(d) for other, d in pairs.items()}  # None for one seed
        detail = "; ".join(f"{o} {format_ci(d, 3)}" for o, d in pairs.items())
        if all(s == good for s in signs.values()):
            return f"- {claim}: holds: {passes} ({detail})."
        against = [o for o, s in signs.items() if s == -good]
        if against:
            return f"- {claim}: does not hold: {', '.join(against)} {fails} ({detail})."
        unclear = [o for o, s in signs.items() if s != good]
        return f"- {claim}: cannot be told: the interval of {', '.join(unclear)} contains 0 or has one seed ({detail})."

    others = [n for n in names if n not in (FULL, "none")]
    leap_others = [n for n in names if n.startswith("leap-") and n != REPTILE_CORNER]
    # (the configuration the claim is about, those it is compared with, the order of each
    # paired difference so that the claim holds above 0, the claim, its refutation, its proof)
    loss_claims = (
        (FULL, others, lambda other: (other, FULL),
         "The full configuration (p=1, μ=1, f=1) converges fastest in meta-training (the lowest mean task "
         "training loss over meta-training; each other configuration minus it, paired by seed)",
         "converges faster", "every other configuration's mean training loss lies above it"),
        (REPTILE_CORNER, leap_others, lambda other: (REPTILE_CORNER, other),
         "Reptile's configuration (p=2, μ=0, f=0) is the least efficient of Leap's (the highest mean task training "
         "loss; it minus each other configuration, paired by seed)",
         "trains slower than it", "its mean training loss lies above every other configuration's"),
    )
    for subject, compared, order, claim, fails, passes in loss_claims:
        if subject in names:
            pairs = {label[other]: d for other in compared
                     if (d := _paired(by_seed, *order(other), "train_loss_mean"))}
            sentences.append(judge(claim, pairs, +1, fails, passes))
    # Convergence of the twins that differ in one option (the paper: the closer to the path
    # length the better; the stabilizer speeds it up significantly; the loss in the manifold
    # does not speed it up).
    twin_claims = (
        (METRIC_PAIRS, "The path length (p=1) converges faster than the energy (p=2) (the mean task training "
         "loss at p=2 minus at p=1, at equal μ and f, paired by seed)", "converges faster at p=2",
         "each configuration at p=2 trains slower than its twin at p=1"),
        (STABILIZER_PAIRS, "The stabilizer μ speeds up meta-training convergence (the mean task training loss "
         "without it minus with it, at equal p and f, paired by seed)", "converges faster without it",
         "each configuration without it trains slower than its twin with it"),
        (MANIFOLD_PAIRS, "The loss in the manifold does not speed up meta-training convergence (the mean task "
         "training loss with it minus without it, at equal p and μ, paired by seed)", "converges faster with it",
         "each configuration with it trains slower than its twin without it"),
    )
    for twins, claim, fails, passes in twin_claims:
        pairs = {f"{label[a]} minus {label[b]}": d for a, b in twins
                 if (d := _paired(by_seed, a, b, "train_loss_mean"))}
        if pairs:
            sentences.append(judge(claim, pairs, +1, fails, passes))
    def verdict(differences: list[float]) -> str:
        if not differences:
            return "cannot be told (no seed ran both)"
        return interval_verdict(differences, "holds", "does not hold", "cannot be told")

    for with_loss, without in MANIFOLD_PAIRS:
        if with_loss in names and without in names:
            seeds = [100 * d for d in _paired(by_seed, with_loss, without, "test_error")]
            tasks = _paired_by_task(by_seed, with_loss, without)
            both = [r for r in by_seed.values() if with_loss in r and without in r]
            error_with = sum(r[with_loss]["test_error"] for r in both)
            error_without = sum(r[without]["test_error"] for r in both)
            ratio = error_with / max(1e-12, error_without)
            # The paper's size of the effect: the difference that halves the error without it.
            halving = -50 * error_without / max(1, len(both))

            sentences.append(
                f"- The loss in the manifold lowers the final test error ({label[with_loss]} minus "
                f"{label[without]}, points; the paper: it cuts prediction error in half): over seeds "
                f"{_ci(seeds)}: {verdict(seeds)}; over (seed, task) pairs "
                f"{_ci(tasks)}: {verdict(tasks)}; the ratio of the mean "
                f"test errors is {ratio:.2f}; a halving ({halving:.1f} points): over seeds "
                f"{_against(seeds, halving)}, over (seed, task) pairs {_against(tasks, halving)}.")
    return sentences


def write_ablation_seeds_report(directory: str | Path, window: int | None = None) -> list[Path]:
    """ablation.md and ablation.png of the ablations in ``directory``'s subdirectories, one
    per seed and run under the same protocol: per configuration the mean over seeds with
    its 95% interval, the differences from the full configuration and from no pretraining
    paired by seed (and by seed and held-out task), one sentence per claim of appendix C,
    and Figure 6 as the mean curve over seeds. Returns the paths written."""
    directory = Path(directory)
    proto, by_seed = read_seed_ablations(directory)
    seeds = sorted(by_seed)
    names = configurations_run(by_seed)
    meta_lrs = ", ".join(sorted({f"{r['meta_lr']:g}" for rows in by_seed.values() for r in rows.values()
                                 if r.get("meta_lr") is not None})) or "-"
    lines = [
        f"# Appendix C ablation on the {proto['benchmark']} benchmark, {len(seeds)} seeds",
        "",
        f"Meta-training: {proto['meta_steps']} meta-steps x {proto['meta_batch']} tasks x {proto['task_steps']} "
        f"steps (inner lr {proto['inner_lr']}, batch {proto['task_batch']}), {proto['pretrain_tasks']} pretraining "
        f"tasks, meta lr {meta_lrs}, seeds {', '.join(map(str, seeds))} (one ablation directory each). Evaluation: "
        f"{proto['eval_steps']} steps (lr {proto['eval_lr']}, batch {proto['eval_batch']}) on each held-out task.",
        "",
        "Each cell: mean over seeds ± the half-width of its 95% interval (Student's t, n seeds). Differences are "
        "paired: within a seed every configuration meets the same tasks, minibatches and heads; 'by task' pairs "
        "each (seed, held-out task). Training loss: the average task training loss of a meta-step, averaged over "
        "all meta-steps (the area under Figure 6's curve) and over the last 10%.",
        "",
        "| Configuration | p | μ | f | Test error (%) | minus none | minus p=1, μ=1, f=1 | minus p=1, μ=1, f=1, "
        "by task | Train loss, mean | minus p=1, μ=1, f=1 | Train loss, last 10% | Meta-train (h) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        runs = [rows[name] for _, rows in sorted(by_seed.items()) if name in rows]
        config = CONFIGS_BY_NAME[name]
        flags = ["-"] * 3 if config.p is None else [str(config.p), str(int(config.stabilizer)),
                                                      str(int(config.loss_in_manifold))]
        minus_full = [100 * d for d in _paired(by_seed, name, FULL, "test_error")] if name != FULL else []
        loss_minus_full = _paired(by_seed, name, FULL, "train_loss_mean") if name != FULL else []
        loss_mean = [r["train_loss_mean"] for r in runs if r.get("train_loss_mean") is not None]
        loss_last = [r["train_loss_last"] for r in runs if r.get("train_loss_last") is not None]
        lines.append(
            f"| {config.label} | {' | '.join(flags)} | {_ci([100 * r['test_error'] for r in runs])} "
            f"| {_ci([100 * d for d in _paired(by_seed, name, 'none', 'test_error')]) if name != 'none' else '-'} "
            f"| {_ci(minus_full)} | {_ci(_paired_by_task(by_seed, name, FULL)) if name != FULL else '-'} "
            f"| {_ci(loss_mean, 3)} | {_ci(loss_minus_full, 3)} | {_ci(loss_last, 3)} "
            f"| {sum(r['train_seconds'] for r in runs) / 3600:.1f} |")
    lines += ["", "## The claims of appendix C", "", *ablation_claims(by_seed)]
    md = directory / "ablation.md"
    atomic_write_text(md, "\n".join(lines) + "\n")
    curves = {}
    for name in names:
        per_seed = [[m["train_loss"] for m in read_metrics(Path(rows[name]["run_dir"]))]
                    for _, rows in sorted(by_seed.items()) if name in rows]
        per_seed = [c for c in per_seed if c]
        if per_seed:
            length = min(len(c) for c in per_seed)
            # A configuration some seeds have not run yet is the mean of fewer seeds: say so.
            label = CONFIGS_BY_NAME[name].label + (f" (n={len(per_seed)})" if len(per_seed) < len(seeds) else "")
            curves[label] = [sum(c[i] for c in per_seed) / len(per_seed) for i in range(length)]
    title = f"mean of {len(seeds)} seeds"
    return [md, plot_figure6(curves, directory / "ablation.png", proto, window, subtitle=title)]


def plot_figure6(curves: dict[str, list[float]], path: Path, protocol: dict[str, Any],
                 window: int | None = None, subtitle: str | None = None) -> Path:
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
                 f"{protocol['meta_batch']} x {protocol['task_steps']} steps per meta-step"
                 + (f"\n{subtitle}" if subtitle else ""), **({"fontsize": 10} if subtitle else {}))
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
