"""Tables (Markdown) and learning-curve plots of evaluation results."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leap.engine.rundir import meta_training_seconds
from leap.experiments.config import RunConfig
from leap.experiments.fewshot.results import mismatch, read_result
from leap.experiments.methods import METHODS
from leap.util.errors import CorruptFileError
from leap.util.files import atomic_write_text, read_json_record, read_jsonl, save_figure
from leap.util.stats import format_ci, interval_verdict

METHOD_LABELS = {name: m.label for name, m in METHODS.items()}


def method_label(method: str, result: dict[str, Any] | None = None) -> str:
    """How tables and figures name ``method``; finetuning evaluated with its pretrained head
    (a benchmark whose tasks share their labels, ``shared_labels``) is multi-task pretraining."""
    if method == "finetune" and result is not None and result.get("evaluation", {}).get("fresh_heads") is False:
        return "Multi-task pretraining"
    return METHOD_LABELS.get(method, method)


#: Benchmarks judged by their loss as well (language models): their tables add the test
#: loss and the area under the training-loss curve (nats per predicted byte).
LOSS_BENCHMARKS = ("charlm",)


def comparison_table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown table: one row per method, test error (mean ± std over tasks) and AUC; for a
    benchmark of `LOSS_BENCHMARKS`, also the test loss and the training loss's AUC."""
    tasks = sorted({len(r["test_errors"]) for r in results.values() if "test_errors" in r})
    over = f"the {tasks[0]} held-out tasks" if len(tasks) == 1 else "held-out tasks"
    losses = all("test_loss" in r and r.get("evaluation", {}).get("benchmark") in LOSS_BENCHMARKS
                 for r in results.values())
    loss_head, loss_rule = (" Test loss | AUC of training loss |", "---|---|") if losses else ("", "")
    lines = [
        f"| Method | Test error (%), mean ± std over {over} | AUC of training error (%) |{loss_head}"
        " Meta-training time (s) |",
        f"|---|---|---|{loss_rule}---|",
    ]
    for method, r in results.items():
        label = method_label(method, r)
        seconds = r.get("train_seconds")
        time_cell = f"{seconds:.1f}" if seconds is not None else "-"
        loss_cells = f" {r['test_loss']:.3f} | {r['loss_auc']:.3f} |" if losses else ""
        lines.append(
            f"| {label} | {100 * r['test_error']:.1f} ± {100 * r['test_error_std']:.1f} "
            f"| {100 * r['auc']:.1f} |{loss_cells} {time_cell} |"
        )
    return "\n".join(lines) + "\n"


#: How figures and tables name the benchmarks.
BENCHMARK_NAMES = {"builtin": "Built-in benchmark", "omniglot": "Omniglot",
                   "charlm": "Character-level LM (standard library)"}


def moving_average(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_curves(results: dict[str, dict[str, Any]], path: str | Path, title: str, window: int = 5) -> Path:
    """Mean training error on held-out tasks against task-training steps (Figure 3 left)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for method, r in results.items():
        curve = moving_average(r["curve"], window)
        ax.plot(range(1, len(curve) + 1), [100 * c for c in curve], label=method_label(method, r))
    ax.set_xlabel("training step on held-out task")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # steps are integers
    ax.set_ylabel(f"training error (%), moving average {window}")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    save_figure(fig, path)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------- sweep reports (Table 2, Figure 3)
# Table 2 of the paper: mean test error (%) after 100 steps on held-out Omniglot tasks.
PAPER_TABLE2 = {
    1: {"leap": 62.3, "reptile": 59.8, "finetune": 46.5, "maml": 64.0, "fomaml": 64.5, "none": 82.3},
    3: {"leap": 46.5, "reptile": 46.5, "finetune": 36.0, "maml": 56.2, "fomaml": 59.0, "none": 82.3},
    5: {"leap": 40.3, "reptile": 41.4, "finetune": 32.5, "maml": 50.1, "fomaml": 53.0, "none": 82.5},
    10: {"leap": 32.6, "reptile": 35.6, "finetune": 28.7, "maml": 49.3, "fomaml": 49.6, "none": 82.9},
    15: {"leap": 29.6, "reptile": 33.3, "finetune": 26.9, "maml": 45.5, "fomaml": 47.8, "none": 82.6},
    20: {"leap": 26.0, "reptile": 30.8, "finetune": 24.7, "maml": 41.7, "fomaml": 45.4, "none": 82.6},
    25: {"leap": 24.8, "reptile": 29.4, "finetune": 23.5, "maml": 42.9, "fomaml": 44.0, "none": 82.8},
}
METHOD_ORDER = ["leap", "reptile", "finetune", "maml", "fomaml", "none"]


def collect_runs(root: str | Path, left_out: list[str] | None = None) -> list[dict[str, Any]]:
    """Every finished run under ``root``: its config.json merged with its eval-test.json,
    when that file is the evaluation of the run as it is now (`read_result()`: the
    config's evaluation settings, the digest of its init.safetensors). Runs left out are
    appended to ``left_out`` as "DIR: why"."""
    import json

    runs = []
    for result_path in sorted(Path(root).rglob("eval-test.json")):
        run_dir = result_path.parent
        try:
            config = json.loads((run_dir / "config.json").read_text())
            cfg = RunConfig.from_dict(config).resolved()
        except (OSError, ValueError, TypeError, AttributeError) as err:
            why = f"config.json cannot be read as a run's configuration ({err})"
            cfg = None
        else:
            result, why = read_result(run_dir, cfg)
        if cfg is None or result is None:
            if left_out is not None:
                left_out.append(f"{run_dir}: {why}")
            continue
        runs.append({**config, **result, "dir": str(run_dir), "config": config})
    return runs


#: Config keys that do not change what a run is (how it ran, or what the table spreads over).
NOT_CONFIGURATION = {"seed", "pretrain_tasks", "device", "engine", "compile", "max_tasks_per_chunk", "data_dir"}


def columns(runs: list[dict[str, Any]]) -> list[str]:
    """Each run's column: its method, and where one method was run with several
    configurations, the settings that differ (``maml (meta_steps=1300)``), so runs of
    different configurations are never averaged as if they were seeds. Configurations are
    compared as the runs ran them (`RunConfig.resolved()`): a field a config.json lacks
    because it was added to RunConfig later takes the value the run used, its benchmark's
    default, not None."""
    def effective(r: dict[str, Any]) -> dict[str, Any]:
        config = r.get("config", r)
        try:
            return RunConfig.from_dict(config).resolved().to_dict()
        except (ValueError, TypeError, AttributeError, KeyError):
            return config  # not a run's configuration (a hand-made record): compared as written

    def signature(config: dict[str, Any]) -> tuple:
        return tuple(sorted((k, repr(v)) for k, v in config.items() if k not in NOT_CONFIGURATION))

    configs = [effective(r) for r in runs]
    by_method: dict[str, set[tuple]] = {}
    for r, config in zip(runs, configs, strict=True):
        by_method.setdefault(r["method"], set()).add(signature(config))
    labels = []
    for r, config in zip(runs, configs, strict=True):
        variants = by_method[r["method"]]
        if len(variants) == 1:
            labels.append(r["method"])
            continue
        shared = set.intersection(*(set(v) for v in variants))
        differing = sorted({k for sig in variants for k, v in sig if (k, v) not in shared})
        desc = ", ".join(f"{k}={config.get(k)}" for k in differing if k != "method")
        labels.append(f"{r['method']} ({desc})")
    return labels


@dataclass(frozen=True)
class Quantity:
    """A number each evaluation reports, as the tables show it: ``key`` (the mean over the
    held-out tasks) and ``per_task`` (its value per task) in eval-test.json, times ``scale``,
    with ``digits`` decimals."""

    key: str
    per_task: str
    title: str
    scale: float = 100.0
    digits: int = 1


TEST_ERROR = Quantity("test_error", "test_errors", "test error, points")
AUC = Quantity("auc", "aucs", "AUC of training error, points")
#: A language model's (`LOSS_BENCHMARKS`): the test loss and the mean training loss over the
#: evaluation steps (the area under its loss curve), in nats per predicted byte.
TEST_LOSS = Quantity("test_loss", "test_losses", "test loss, nats", 1.0, 3)
LOSS_AUC = Quantity("loss_auc", "loss_aucs", "mean training loss, nats", 1.0, 3)


def _grid(runs: list[dict[str, Any]], quantity: Quantity) -> dict[tuple[int, str], list[float]]:
    grid: dict[tuple[int, str], list[float]] = {}
    for r, column in zip(runs, columns(runs), strict=True):
        grid.setdefault((r["pretrain_tasks"], column), []).append(quantity.scale * r[quantity.key])
    return grid


def _label(column: str, runs: list[dict[str, Any]] | None = None) -> str:
    """A column's name; with ``runs``, finetuning that kept its pretrained head is named
    multi-task pretraining (`method_label()`)."""
    method, _, rest = column.partition(" ")
    mine = [r for r in runs or () if r["method"] == method]
    return method_label(method, mine[0] if mine else None) + (f" {rest}" if rest else "")


def sweep_table(runs: list[dict[str, Any]], quantity: Quantity = TEST_ERROR) -> str:
    """Table 2's shape: rows = pretraining-task counts, columns = methods, mean ± the
    half-width of its 95% interval over seeds (`leap.util.stats.format_ci()`), of each
    run's ``quantity``."""
    grid = _grid(runs, quantity)
    methods = sorted({k[1] for k in grid}, key=lambda c: (_method_rank(c), c))
    counts = sorted({k[0] for k in grid})
    lines = ["| Pretraining tasks | " + " | ".join(_label(m, runs) for m in methods) + " |",
             "|---" * (len(methods) + 1) + "|"]
    for n in counts:
        cells = []
        for m in methods:
            values = grid.get((n, m))
            # No "± 0.0" for a single seed: a spread over one value says nothing.
            cells.append(format_ci(values, quantity.digits) if values else "-")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


#: Paired differences the report gives (Table 2's claims: Leap below Reptile, MAML and FOMAML,
#: finetuning below Leap).
PAIRS = (("leap", "reptile"), ("finetune", "leap"), ("leap", "maml"), ("leap", "fomaml"))
#: A language model's: every initialization against the random one, and the paper's two.
LOSS_PAIRS = (("leap", "none"), ("reptile", "none"), ("finetune", "none"), *PAIRS)


def paired_table(runs: list[dict[str, Any]], pairs: tuple[tuple[str, str], ...] = PAIRS,
                 quantity: Quantity = TEST_ERROR, verdicts: bool = False) -> str:
    """``quantity`` of A minus B where both ran with the same seed and pretraining count,
    so on the same held-out tasks: over seeds (each seed's mean over tasks), and over every
    (seed, task) pair, each with its 95% interval; with ``verdicts``, what the interval over
    seeds says (A lower, higher or indistinguishable). Empty when no pair ran."""
    plain = [r for r, c in zip(runs, columns(runs), strict=True) if c == r["method"]]  # one configuration each
    by_key = {(r["method"], r["pretrain_tasks"], r["seed"]): r for r in plain}
    q, digits = quantity, quantity.digits
    lines = []
    for a, b in pairs:
        for n in sorted({r["pretrain_tasks"] for r in plain}):
            seeds = sorted(s for (m, c, s) in by_key if m == a and c == n and (b, n, s) in by_key)
            if not seeds:
                continue
            over_seeds = [q.scale * (by_key[(a, n, s)][q.key] - by_key[(b, n, s)][q.key]) for s in seeds]
            over_tasks = [q.scale * (x - y) for s in seeds for x, y in
                          zip(by_key[(a, n, s)][q.per_task], by_key[(b, n, s)][q.per_task], strict=True)]
            verdict = f" {interval_verdict(over_seeds, 'lower', 'higher')} |" if verdicts else ""
            lines.append(f"| {_label(a, runs)} - {_label(b, runs)} | {n} | {format_ci(over_seeds, digits)} | "
                         f"{format_ci(over_tasks, digits)} |{verdict}")
    if not lines:
        return ""
    head, rule = (" Over seeds, A is |", "---|") if verdicts else ("", "")
    return (f"| Difference ({q.title}) | Pretraining tasks | Over seeds | Over (seed, task) pairs |{head}\n"
            f"|---|---|---|---|{rule}\n" + "\n".join(lines) + "\n")


def cost_table(runs: list[dict[str, Any]]) -> str:
    """Per method and pretraining count: its meta-training's wall time (the meta-steps' own
    times: the evaluation's ``train_seconds``, or for an evaluation written before it
    recorded them, the sum of the ``seconds`` of the run's metrics.jsonl, the same sum) and
    its peak resident memory (the largest ``peak_resident_mib`` in metrics.jsonl: the
    process's peak since the run started), each the mean over its runs with their range."""
    lines = ["| Method | Pretraining tasks | Runs | Meta-training time (s), mean (min-max) | Peak resident memory "
             "(MiB), mean (min-max) |", "|---|---|---|---|---|"]
    by_cell: dict[tuple[str, int], list[tuple[float | None, float | None]]] = {}
    for r, column in zip(runs, columns(runs), strict=True):
        metrics = Path(r["dir"]) / "metrics.jsonl"
        records = read_jsonl(metrics) if metrics.is_file() else []
        peaks = [p for rec in records if isinstance(p := rec.get("peak_resident_mib"), (int, float))]
        seconds = r.get("train_seconds")
        if seconds is None and records:
            seconds = meta_training_seconds(records)
        by_cell.setdefault((column, r["pretrain_tasks"]), []).append((seconds, max(peaks) if peaks else None))
    for column, count in sorted(by_cell, key=lambda k: (_method_rank(k[0]), k[0], k[1])):
        cells = []
        for i in (0, 1):
            values = [v[i] for v in by_cell[column, count] if v[i] is not None]
            cells.append(f"{sum(values) / len(values):.0f} ({min(values):.0f}-{max(values):.0f})" if values else "-")
        lines.append(f"| {_label(column, runs)} | {count} | {len(by_cell[column, count])} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def _method_rank(column: str) -> int:
    """A column's place in the tables: Table 2's method order, unknown methods last."""
    method = column.split(" ")[0]
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


def paper_table2(counts: list[int]) -> str:
    lines = ["| Pretraining tasks | " + " | ".join(METHOD_LABELS[m] for m in METHOD_ORDER) + " |",
             "|---" * (len(METHOD_ORDER) + 1) + "|"]
    for n in counts:
        if n in PAPER_TABLE2:
            lines.append(f"| {n} | " + " | ".join(f"{PAPER_TABLE2[n][m]:.1f}" for m in METHOD_ORDER) + " |")
    return "\n".join(lines) + "\n"


def plot_figure3(runs: list[dict[str, Any]], path: str | Path, window: int = 5) -> Path:
    """Figure 3: left, training error on held-out tasks for the largest pretraining count
    (mean over seeds, moving average, shading ± one std across seeds); right, AUC against
    the number of pretraining tasks (shading ± one std across seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import numpy as np

    counts = sorted({r["pretrain_tasks"] for r in runs})
    largest = counts[-1]
    # One line per column of the tables (a method, or a method's configuration where it ran
    # with several): runs of different configurations, e.g. evaluation lengths, are never pooled.
    labels = columns(runs)
    methods = sorted(set(labels), key=lambda c: (_method_rank(c), c))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=120)
    for m in methods:
        mine = [r for r, label in zip(runs, labels, strict=True) if label == m]
        _plot_seeds(left, [r["curve"] for r in mine if r["pretrain_tasks"] == largest], window, 100.0,
                    _label(m, runs))
        xs, means, stds = [], [], []
        for n in counts:
            aucs = [100 * r["auc"] for r in mine if r["pretrain_tasks"] == n]
            if aucs:
                xs.append(n)
                means.append(float(np.mean(aucs)))
                stds.append(float(np.std(aucs)))
        (line,) = right.plot(xs, means, marker="o", label=_label(m, runs))
        right.fill_between(xs, np.subtract(means, stds), np.add(means, stds), color=line.get_color(), alpha=0.2)
        if len(xs) == 1:  # a single count: the band is invisible, show ± one std as an error bar
            right.errorbar(xs, means, yerr=stds, color=line.get_color(), capsize=4)
    right.set_xticks(counts)  # counts are integers: no fractional ticks
    left.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # so are steps
    several = any(sum(label == m and r["pretrain_tasks"] == n for r, label in zip(runs, labels, strict=True)) > 1
                  for m in methods for n in counts)
    band = "shading: ± one std over n seeds (n in the legend)" if several else "one seed per method: no spread shown"
    left.set(xlabel="training step on held-out task", ylabel=f"training error (%), moving average {window}",
             title=f"Held-out tasks after {largest} pretraining tasks")
    right.set(xlabel="number of pretraining tasks", ylabel="AUC of training error (%)",
              title="AUC against pretraining tasks")
    benchmark = BENCHMARK_NAMES.get(runs[0]["benchmark"], runs[0]["benchmark"])
    fig.suptitle(f"{benchmark} (Figure 3's shape); {band}", fontsize=10)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    left.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    save_figure(fig, path)
    plt.close(fig)
    return path


def _plot_seeds(ax: Any, curves: list[list[float]], window: int, scale: float, label: str) -> None:
    """One method's curves over seeds on ``ax``: the mean of their moving averages times
    ``scale``, shaded ± one std over seeds; nothing when there is none."""
    import numpy as np

    if not curves:
        return
    smooth = np.array([moving_average(c, window) for c in curves]) * scale
    steps = np.arange(1, smooth.shape[1] + 1)
    (line,) = ax.plot(steps, smooth.mean(0), label=f"{label} (n={len(smooth)})")
    ax.fill_between(steps, smooth.mean(0) - smooth.std(0), smooth.mean(0) + smooth.std(0), color=line.get_color(),
                    alpha=0.2)


def plot_loss_curves(runs: list[dict[str, Any]], path: str | Path, window: int = 10) -> Path:
    """A language model's held-out training: the training loss against the step (each run's
    mean over its held-out tasks, then the mean over seeds, moving average ``window``),
    shading ± one std over seeds; the largest pretraining count only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    largest = max(r["pretrain_tasks"] for r in runs)
    labels = columns(runs)
    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=120)
    for m in sorted(set(labels), key=lambda c: (_method_rank(c), c)):
        _plot_seeds(ax, [r["loss_curve"] for r, label in zip(runs, labels, strict=True)
                         if label == m and r["pretrain_tasks"] == largest and "loss_curve" in r], window, 1.0,
                    _label(m, runs))
    benchmark = BENCHMARK_NAMES.get(runs[0]["benchmark"], runs[0]["benchmark"])
    # Two title lines and a short axis label: the long benchmark names did not fit one line.
    ax.set(xlabel="training step on held-out task", ylabel="training loss (nats per byte)")
    ax.set_title(f"{benchmark}:\nheld-out training from each initialization (moving average of {window})",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    save_figure(fig, path)
    plt.close(fig)
    return path


def budget_points(runs: list[dict[str, Any]], left_out: list[str] | None = None) -> list[tuple[str, int, float]]:
    """(column, meta-step, test error %) of every run's evaluations along meta-training:
    its eval-test-step-*.json (θ0 at a checkpoint, ``leap evaluate --checkpoint``) whose
    settings are the run's, and its final evaluation at its last meta-step."""
    labels = columns(runs)
    points = []
    for r, column in zip(runs, labels, strict=True):
        cfg = RunConfig.from_dict(r["config"]).resolved()
        for path in sorted(Path(r["dir"]).glob("eval-test-step-*.json")):
            try:
                result = read_json_record(path, ("meta_step", "test_error"))
                why = mismatch(result, cfg, "test", None)
            except CorruptFileError as err:
                why = str(err)
            if why is None and not isinstance(result["meta_step"], int):
                why = f"meta_step {result['meta_step']!r} is not a meta-step"
            if why is not None:
                if left_out is not None:
                    left_out.append(f"{path}: {why}")
                continue
            points.append((column, result["meta_step"], 100 * result["test_error"]))
    along = {c for c, _, _ in points}  # the methods evaluated along meta-training: add their final results
    return points + [(c, r["meta_steps"], 100 * r["test_error"]) for r, c in zip(runs, labels, strict=True)
                     if c in along]


def budget_table(points: list[tuple[str, int, float]], runs: list[dict[str, Any]] | None = None) -> str:
    """Rows = meta-steps, columns = methods: mean test error over the runs evaluated there (n)."""
    methods = sorted({c for c, _, _ in points}, key=lambda c: (_method_rank(c), c))
    steps = sorted({s for _, s, _ in points})
    lines = ["| Meta-steps | " + " | ".join(_label(m, runs) for m in methods) + " |",
             "|---" * (len(methods) + 1) + "|"]
    for step in steps:
        cells = []
        for m in methods:
            values = [v for c, s, v in points if c == m and s == step]
            cells.append(format_ci(values) if values else "-")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_budget(points: list[tuple[str, int, float]], paper: dict[str, float], path: Path, title: str,
                runs: list[dict[str, Any]] | None = None) -> Path:
    """Test error against meta-steps: each run's evaluations (dots), the mean over runs
    (line) and the paper's value (dashed) per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=120)
    for method in sorted({c for c, _, _ in points}):
        steps = sorted({s for c, s, _ in points if c == method})
        means = [sum(v for c, s, v in points if c == method and s == st) /
                 sum(1 for c, s, _ in points if c == method and s == st) for st in steps]
        (line,) = ax.plot(steps, means, marker="o", label=_label(method, runs))
        ax.scatter([s for c, s, _ in points if c == method], [v for c, _, v in points if c == method],
                   color=line.get_color(), s=10, alpha=0.5)
        base = method.split(" ")[0]
        if base in paper:
            ax.axhline(paper[base], color=line.get_color(), linestyle="--", linewidth=1,
                       label=f"{_label(base, runs)}: paper ({paper[base]:.1f})")
    ax.set(xlabel="meta-steps", ylabel="test error on held-out tasks (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def write_report(root: str | Path) -> list[Path]:
    """report.md (Table 2's shape for test error and AUC, the paper's Table 2 beside it
    for Omniglot, the protocol of the runs) and figure3.png for a sweep or compare
    directory. Returns the files written (none if no finished run was found)."""
    root = Path(root)
    left_out: list[str] = []
    runs = collect_runs(root, left_out)
    for line in left_out:
        print(f"leap: report: left out {line}", file=sys.stderr)
    if not runs:
        return []
    first = runs[0]
    counts = sorted({r["pretrain_tasks"] for r in runs})
    seeds = sorted({r["seed"] for r in runs})
    budgets: dict[tuple[int, ...], list[str]] = {}
    for r in sorted(runs, key=lambda r: _method_rank(r["method"])):
        methods = budgets.setdefault((r["meta_steps"], r["meta_batch"], r["task_steps"], r["eval_steps"]), [])
        if r["method"] not in methods:
            methods.append(r["method"])
    # Where methods ran different budgets (MAML's cheaper meta-steps, say), say which ran which.
    budget_text = ", ".join(str(b) + (f" ({', '.join(budgets[b])})" if len(budgets) > 1 else "")
                            for b in sorted(budgets))
    text = [f"# Results: {first['benchmark']} benchmark\n",
            f"{len(runs)} runs; seeds {seeds}; (meta-steps, meta-batch, task steps, evaluation steps) = "
            f"{budget_text}. Mean ± the half-width of its 95% confidence interval over seeds "
            "(Student's t; n = number of seeds, no interval for one seed); each run's value is the mean over the "
            "held-out tasks.\n",
            "## Test error (%) after the evaluation steps on held-out tasks\n", sweep_table(runs, TEST_ERROR),
            "\n## Area under the training-error curve (%)\n", sweep_table(runs, AUC)]
    if first["benchmark"] == "omniglot":
        text += ["\n## The paper's Table 2 (test error %, 1000 meta-steps, 20 tasks x 100 steps, 10 seeds)\n",
                 paper_table2(counts)]
    paired = paired_table(runs)
    if paired:
        text += ["\n## Paired differences (same seeds, so the same held-out tasks)\n", paired]
    figures = []
    if first["benchmark"] in LOSS_BENCHMARKS and all("test_loss" in r for r in runs):
        text += ["\n## Test loss (nats per byte) after the evaluation steps\n",
                 sweep_table(runs, TEST_LOSS),
                 "\n## Mean training loss over the evaluation steps (the area under the loss curve, nats per byte)\n",
                 sweep_table(runs, LOSS_AUC)]
        for quantity in (LOSS_AUC, TEST_LOSS):
            losses = paired_table(runs, LOSS_PAIRS, quantity, verdicts=True)
            if losses:
                text += [f"\n## Paired differences of the {quantity.title.split(',')[0]} (same seeds, so the same "
                         "held-out tasks)\n", losses]
        figures.append(plot_loss_curves(runs, root / "loss-curves.png"))
    text += ["\n## Cost of meta-training\n", cost_table(runs)]
    points = budget_points(runs, left_out)
    if points:
        paper = PAPER_TABLE2.get(counts[-1], {}) if first["benchmark"] == "omniglot" else {}
        text += ["\n## Test error (%) against meta-training (θ0 at checkpoints, `leap evaluate --checkpoint`)\n",
                 budget_table(points, runs)]
        figures.append(plot_budget(points, paper, root / "budget.png",
                                   f"{BENCHMARK_NAMES.get(first['benchmark'], first['benchmark'])}: test error "
                                   "against meta-steps", runs))
    if left_out:
        text += ["\n## Runs left out (their result is not the evaluation of the run as it is now)\n",
                 "".join(f"- {line}\n" for line in left_out)]
    md = root / "report.md"  # its own file: compare's results.md is never overwritten
    atomic_write_text(md, "\n".join(text))
    return [md, plot_figure3(runs, root / "figure3.png"), *figures]
