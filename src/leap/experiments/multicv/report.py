"""Table 1's shape with the paper's Table 4 beside ours; per method a summary over the
held-out datasets; Leap's paired differences with every baseline and one sentence per claim
of section 4.2, read off the 95% intervals over seeds; the held-out training curves."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from leap.experiments.multicv.config import METHOD_LABELS, TABLE_METHODS
from leap.experiments.multicv.results import read_result
from leap.tasks.multicv import display_name
from leap.util.errors import CorruptFileError
from leap.util.files import atomic_write_bytes, atomic_write_json, read_json_record, read_jsonl, save_figure
from leap.util.stats import format_ci, interval_sign, interval_verdict

Entry = tuple[dict[str, Any], dict[str, Any]]  # (config, result) of one finished run

PAPER_TABLE4: dict[str, dict[str, tuple[float, float, float]]] = {
    "facescrub": {"leap": (19.9, 0.0, 11.6), "finetune": (32.7, 0.0, 13.2), "progressive": (18.0, 0.0, 8.9),
                  "hat": (25.6, 0.1, 14.6), "none": (18.2, 0.0, 10.5)},
    "notmnist": {"leap": (5.3, 0.6, 2.9), "finetune": (5.4, 2.0, 4.4), "progressive": (5.4, 3.1, 3.7),
                 "hat": (6.0, 2.8, 5.4), "none": (5.4, 2.6, 5.1)},
    "mnist": {"leap": (0.7, 0.1, 0.6), "finetune": (0.9, 0.1, 0.8), "progressive": (0.8, 0.0, 0.7),
              "hat": (0.8, 0.3, 1.2), "none": (0.9, 0.2, 1.0)},
    "fashion-mnist": {"leap": (8.0, 4.2, 6.8), "finetune": (8.9, 3.8, 7.0), "progressive": (8.7, 5.4, 9.2),
                      "hat": (9.5, 5.5, 8.1), "none": (8.4, 4.7, 7.8)},
    "cifar10": {"leap": (21.2, 10.8, 17.5), "finetune": (27.4, 13.3, 20.7), "progressive": (24.2, 15.2, 24.0),
                "hat": (27.7, 21.2, 27.3), "none": (26.2, 13.1, 23.0)},
    "svhn": {"leap": (8.4, 5.6, 7.5), "finetune": (10.9, 6.1, 10.5), "progressive": (10.1, 6.3, 13.8),
             "hat": (10.5, 5.7, 8.5), "none": (10.3, 6.9, 11.5)},
    "cifar100": {"leap": (52.0, 30.5, 43.4), "finetune": (59.2, 31.5, 44.1), "progressive": (55.7, 42.1, 54.6),
                 "hat": (62.0, 49.8, 58.4), "none": (54.8, 33.1, 50.1)},
    "gtsrb": {"leap": (2.9, 0.0, 1.2), "finetune": (5.7, 0.0, 1.7), "progressive": (3.6, 0.0, 4.0),
              "hat": (5.4, 0.0, 2.3), "none": (3.6, 0.0, 2.4)},
}


#: Where a result was read from (this machine's path: not written into multicv.json).
RUN_DIR = "run_dir"


def collect_results(directory: str | Path) -> list[Entry]:
    """(config, result) of every finished run under ``directory`` (any depth); each result
    also says where it was read from (``RUN_DIR``)."""
    found = []
    for result_path in sorted(Path(directory).rglob("result.json")):
        try:
            config = read_json_record(result_path.parent / "config.json")
        except CorruptFileError as err:  # named, as the few-shot report does, not skipped in silence
            result, why = None, str(err)
        else:
            result, why = read_result(result_path.parent, config)
        if result is None:
            print(f"leap: report: left out {result_path.parent}: {why}", file=sys.stderr)
        elif {"held_out", "method", "test_error"} <= set(result):
            found.append((config, {**result, RUN_DIR: str(result_path.parent)}))
    return found


def multicv_table(entries: list[Entry]) -> str:
    """Table 1's shape (held-out dataset x method; Test, Train, AUC), ours beside Table 4.
    Several seeds of one cell: the mean ± the half-width of its 95% interval over seeds (n)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _, r in entries:
        groups.setdefault((r["held_out"], r["method"]), []).append(r)
    paper_order = list(PAPER_TABLE4)
    keys = sorted(groups, key=lambda k: (paper_order.index(k[0]) if k[0] in paper_order else len(paper_order),
                                         k[0], TABLE_METHODS.index(k[1]) if k[1] in TABLE_METHODS else 99))
    lines = ["| Held-out task | Method | Test (%) | Train (%) | AUC | Paper Test (%) | Paper Train (%) | Paper AUC |",
             "|---|---|---|---|---|---|---|---|"]
    previous = None
    for held_out, method in keys:
        runs = groups[(held_out, method)]
        cells = [format_ci([100 * r[k] for r in runs]) for k in ("test_error", "train_error", "auc")]
        paper = PAPER_TABLE4.get(held_out, {}).get(method)
        paper_cells = [f"{v:.1f}" for v in paper] if paper else ["-", "-", "-"]
        task = display_name(held_out) if held_out != previous else ""
        previous = held_out
        lines.append(f"| {task} | {METHOD_LABELS.get(method, method)} | " + " | ".join(cells + paper_cells) + " |")
    return "\n".join(lines) + "\n"


def runs_by_cell(entries: list[Entry]) -> dict[tuple[str, str], dict[int, dict[str, Any]]]:
    """{(held-out dataset, method): {seed: result}}. Runs of one seed share the held-out
    task's data, its head and (leap, finetune, none) the random encoder they start from, so
    differences between methods pair by seed."""
    cells: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for config, result in entries:
        cells.setdefault((result["held_out"], result["method"]), {})[int(config.get("seed", 0))] = result
    return cells


def paired(cells: dict[tuple[str, str], dict[int, dict[str, Any]]], held_out: str, a: str, b: str,
           key: str) -> list[float]:
    """100 x (a - b) of ``key`` over the seeds both methods ran on ``held_out``."""
    runs_a, runs_b = cells.get((held_out, a), {}), cells.get((held_out, b), {})
    return [100 * (runs_a[s][key] - runs_b[s][key]) for s in sorted(set(runs_a) & set(runs_b))]


def summary_table(cells: dict[tuple[str, str], dict[int, dict[str, Any]]]) -> str:
    """Per method, over the held-out datasets where every method of the table ran: the mean
    rank of its mean test error and of its mean AUC (1 = lowest) and its mean AUC."""
    datasets = sorted({d for d, _ in cells})
    methods = [m for m in TABLE_METHODS if any((d, m) in cells for d in datasets)]
    complete = [d for d in datasets if all((d, m) in cells for m in methods)]
    if not complete or len(methods) < 2:
        return ""
    ranks: dict[str, dict[str, list[float]]] = {m: {"test_error": [], "auc": []} for m in methods}
    aucs: dict[str, list[float]] = {m: [] for m in methods}
    for d in complete:
        for key in ("test_error", "auc"):
            means = {m: sum(r[key] for r in cells[(d, m)].values()) / len(cells[(d, m)]) for m in methods}
            for rank, m in enumerate(sorted(methods, key=means.__getitem__), start=1):
                ranks[m][key].append(rank)
        for m in methods:
            aucs[m].append(100 * sum(r["auc"] for r in cells[(d, m)].values()) / len(cells[(d, m)]))
    lines = [f"Over the {len(complete)} held-out datasets every method ran on ({', '.join(complete)}):", "",
             "| Method | Mean rank, test error | Mean rank, AUC | Mean AUC |", "|---|---|---|---|"]
    for m in methods:
        lines.append(f"| {METHOD_LABELS.get(m, m)} | {sum(ranks[m]['test_error']) / len(complete):.1f} | "
                     f"{sum(ranks[m]['auc']) / len(complete):.1f} | {sum(aucs[m]) / len(complete):.1f} |")
    return "\n".join(lines) + "\n"


def paired_table(cells: dict[tuple[str, str], dict[int, dict[str, Any]]]) -> str:
    """Leap minus each baseline, per held-out dataset, paired by seed (percentage points)."""
    lines = ["| Held-out task | Leap minus | Test error | AUC | Leap's AUC is |", "|---|---|---|---|---|"]
    for d in sorted({d for d, m in cells if m == "leap"}):
        for b in TABLE_METHODS:
            auc = paired(cells, d, "leap", b, "auc")
            if b == "leap" or not auc:
                continue
            test = paired(cells, d, "leap", b, "test_error")
            lines.append(f"| {display_name(d)} | {METHOD_LABELS.get(b, b)} | {format_ci(test)} | {format_ci(auc)} | "
                         f"{interval_verdict(auc, below='lower', above='higher')} |")
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def claims(cells: dict[tuple[str, str], dict[int, dict[str, Any]]]) -> list[str]:
    """One sentence per claim of section 4.2, per held-out dataset, from the 95% intervals
    of the paired differences over seeds."""
    datasets = sorted({d for d, m in cells if m == "leap"})
    out = []
    for key, what in (("auc", "the lowest AUC (it trains fastest)"), ("test_error", "the lowest final test error")):
        for d in datasets:
            diffs = {b: paired(cells, d, "leap", b, key) for b in TABLE_METHODS if b != "leap"}
            diffs = {b: v for b, v in diffs.items() if v}
            if not diffs:
                continue
            below = [b for b, v in diffs.items() if interval_sign(v) == -1]
            above = [b for b, v in diffs.items() if interval_sign(v) == 1]
            if len(below) == len(diffs):
                verdict = "holds: below every baseline, each interval below 0"
            elif above:
                verdict = ("does not hold: above " + ", ".join(METHOD_LABELS.get(b, b) for b in above)
                           + " (interval above 0)")
            else:
                verdict = "cannot be told: an interval contains 0 (or one seed)"
            out.append(f"- Leap has {what} on {display_name(d)}: {verdict}.")
    for m in ("finetune", "hat"):
        worse, shown = [], []
        for d in sorted({d for d, _ in cells}):
            v = paired(cells, d, m, "none", "test_error")
            if v:
                shown.append(d)
                if interval_sign(v) == 1:
                    worse.append(f"{display_name(d)} ({format_ci(v)} points)")
        if shown:
            label = METHOD_LABELS.get(m, m)
            out.append(f"- {label} ends below no pretraining (a higher test error) on some datasets: "
                       + (f"holds on {', '.join(worse)}." if worse else
                          f"not shown on any of {len(shown)} (no interval above 0)."))
    ratios = sorted({round(r["parameters"] / n["parameters"], 1)
                     for d, _ in cells for r in cells.get((d, "progressive"), {}).values()
                     for n in cells.get((d, "none"), {}).values() if "parameters" in r and "parameters" in n})
    if ratios:
        size = f"{ratios[0]:g}" if len(ratios) == 1 else f"{ratios[0]:g} to {ratios[-1]:g}"
        out.append(f"- Progressive Nets' size: {size}x the parameters of the plain network on the held-out "
                   "dataset (the paper: over 8 times, with 8 datasets).")
    return out


def plot_multicv_curves(entries: list[Entry], path: str | Path) -> Path:
    """One panel per held-out dataset: each run's training error on it (the downsampled
    curve of result.json) against its training steps; one colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["held_out"] for _, r in entries})
    cols = min(3, len(datasets))
    rows = -(-len(datasets) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), dpi=110, squeeze=False)
    colours = {m: f"C{i}" for i, m in enumerate(TABLE_METHODS)}
    for ax, d in zip(axes.flat, datasets, strict=False):
        labelled = set()
        for _, r in sorted(entries, key=lambda e: TABLE_METHODS.index(e[1]["method"])
                           if e[1]["method"] in TABLE_METHODS else 99):
            if r["held_out"] != d or not r.get("curve"):
                continue
            curve, steps = r["curve"], r["eval_steps"]
            x = [(i + 0.5) * steps / len(curve) for i in range(len(curve))]
            m = r["method"]
            ax.plot(x, [100 * c for c in curve], color=colours.get(m, "k"), lw=1, alpha=0.8,
                    label=None if m in labelled else METHOD_LABELS.get(m, m))
            labelled.add(m)
        ax.set_title(f"held out: {display_name(d)}")
        ax.set_xlabel("training steps")
        ax.set_ylabel("training error (%)")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(datasets):]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return Path(path)


#: A Leap run's meta-training, per meta-step: (held-out, seed, metrics records of its metrics.jsonl).
MetaCurve = tuple[str, int, list[dict[str, Any]]]


def leap_meta_curves(entries: list[Entry]) -> list[MetaCurve]:
    """The metrics of every Leap run among ``entries`` (the report's runs): its
    meta-objective per task (``task_paths``, eq. 5) and the mean validation error per
    meta-step."""
    curves = []
    for config, result in entries:
        metrics = Path(result[RUN_DIR]) / "metrics.jsonl"
        if result["method"] != "leap" or not metrics.is_file():
            continue
        records = [r for r in read_jsonl(metrics) if "task_paths" in r]
        if records:
            curves.append((str(result["held_out"]), int(config.get("seed", 0)), records))
    return curves


def early_and_late_paths(curves: list[MetaCurve], held_out: str,
                         fraction: float) -> dict[str, tuple[list[float], list[float]]]:
    """Per pretraining dataset, the paths of its tasks (finite ones) in the first and in the
    last ``fraction`` of each Leap run's own meta-steps (a run stopped early by meta-patience
    is cut at its own end), over the runs holding ``held_out`` out. A task's path depends on
    its dataset (its images, its steps), so the meta-objective is read per dataset."""
    paths: dict[str, tuple[list[float], list[float]]] = {}
    for d, _, records in curves:
        if d != held_out:
            continue
        last = max(int(r["step"]) for r in records)
        cut = max(1, round(fraction * last))
        for r in records:
            for name, path in zip(r["tasks"], r["task_paths"], strict=True):
                early, late = paths.setdefault(name, ([], []))
                if not math.isfinite(path):
                    continue
                if int(r["step"]) <= cut:
                    early.append(float(path))
                if int(r["step"]) > last - cut:
                    late.append(float(path))
    return paths


def meta_objective_table(curves: list[MetaCurve], fraction: float = 0.2) -> str:
    """Per held-out dataset and pretraining dataset: Leap's mean path (its meta-objective)
    over the tasks of the first and of the last ``fraction`` of each run's meta-steps, each
    ± the half-width of its 95% interval over those tasks, and the change; a dataset drawn
    in only one of the two is named below the table."""
    lines = [f"| Held-out | Pretraining dataset | Mean path, first {fraction:.0%} of meta-steps (tasks) | "
             f"Mean path, last {fraction:.0%} (tasks) | Change |", "|---|---|---|---|---|"]
    missing = []
    for held_out in sorted({d for d, _, _ in curves}):
        for name, (early, late) in sorted(early_and_late_paths(curves, held_out, fraction).items()):
            if not early or not late:
                missing.append(f"{display_name(name)} (held out {display_name(held_out)}: no task "
                               f"{'early' if not early else 'late'})")
                continue
            a, b = sum(early) / len(early), sum(late) / len(late)
            lines.append(f"| {display_name(held_out)} | {display_name(name)} | {format_ci(early, 2)} | "
                         f"{format_ci(late, 2)} | {100 * (b - a) / a:+.0f}% |")
    if missing:
        lines += ["", "Not compared (drawn in only one of the two parts): " + "; ".join(missing) + "."]
    return "\n".join(lines) + "\n"


def plot_meta_objective(curves: list[MetaCurve], path: str | Path) -> Path:
    """One column per held-out dataset: top, the path (Leap's meta-objective) of every
    pretraining task against its meta-step, one colour per pretraining dataset; bottom, the
    meta-batch's mean validation error (what meta early stopping reads), one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    datasets = sorted({d for d, _, _ in curves})
    fig, axes = plt.subplots(2, len(datasets), figsize=(5 * len(datasets), 6.5), dpi=110, squeeze=False)
    for col, held_out in enumerate(datasets):
        top, bottom = axes[0, col], axes[1, col]
        points: dict[str, list[tuple[int, float]]] = {}
        for d, _, records in curves:
            for r in records if d == held_out else ():
                for name, value in zip(r["tasks"], r["task_paths"], strict=True):
                    points.setdefault(name, []).append((int(r["step"]), float(value)))
        for i, (name, xy) in enumerate(sorted(points.items())):
            top.scatter([x for x, _ in xy], [y for _, y in xy], s=10, color=f"C{i}", label=display_name(name))
        for d, seed, records in curves:
            if d == held_out:
                bottom.plot([r["step"] for r in records], [100 * r["mean_val_error"] for r in records], lw=1,
                            label=f"seed {seed}")
        top.set(title=f"held out: {display_name(held_out)}", xlabel="meta-step", ylabel="path of the task (eq. 5)")
        bottom.set(xlabel="meta-step", ylabel="mean validation error (%)")
        for ax in (top, bottom):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # meta-steps are integers
        top.legend(fontsize=7)
        bottom.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return Path(path)


def _seed_order(seed: Any) -> tuple[bool, int]:
    """Seeds in numeric order (10 after 9), a run that records none last."""
    return (seed is None, seed if isinstance(seed, int) else 0)


def cost_table(entries: list[Entry]) -> str:
    """Per method, the hours its runs took (pretraining and held-out evaluation, each run's
    own measured seconds: one thread each, so CPU-hours on a machine not otherwise loaded)."""
    rows = ["| Method | Runs | Pretraining (h) | Evaluation (h) | Total (h) |", "|---|---|---|---|---|"]
    totals = [0, 0.0, 0.0]
    for method in TABLE_METHODS:
        runs = [r for _, r in entries if r["method"] == method]
        if not runs:
            continue
        pre, ev = (sum(r[k] for r in runs) / 3600 for k in ("pretrain_seconds", "eval_seconds"))
        rows.append(f"| {METHOD_LABELS[method]} | {len(runs)} | {pre:.1f} | {ev:.1f} | {pre + ev:.1f} |")
        totals = [totals[0] + len(runs), totals[1] + pre, totals[2] + ev]
    rows.append(f"| All | {totals[0]} | {totals[1]:.1f} | {totals[2]:.1f} | {totals[1] + totals[2]:.1f} |")
    return "\n".join(rows)


def write_multicv_report(directory: str | Path) -> list[Path]:
    """Write ``multicv.md`` (Table 1-shaped, ours beside the paper's Table 4, with the
    protocol and the notes on splits) and ``multicv.json`` into ``directory``; returns
    their paths (an empty list when no run has finished)."""
    directory = Path(directory)
    entries = collect_results(directory)
    if not entries:
        return []
    budget_keys = ("meta_steps", "meta_batch", "task_epochs", "task_batch", "task_lr", "meta_lr", "eval_epochs",
                   "eval_batch", "eval_lr", "patience", "meta_patience", "check_every", "val_size", "sample_cap",
                   "test_cap", "metric")  # the seed is not the protocol: seeds are listed apart
    protocols = {json.dumps({k: c.get(k) for k in budget_keys}, sort_keys=True) for c, _ in entries}
    seeds = sorted({c.get("seed") for c, _ in entries}, key=_seed_order)
    notes = sorted({n for _, r in entries for n in r.get("notes", [])})
    text = ["# Multi-CV results\n",
            "Rows: held-out dataset x method (Table 1's shape); Test and Train are error rates (%), AUC is the "
            "area under the training-error curve on the held-out dataset scaled to 0-100 (100 x mean minibatch "
            "training error over the steps taken); several seeds: mean ± the half-width of its 95% interval over seeds "
            "(Student's t, n seeds). Paper columns: Table 4 of Flennerhag et al. (2019).\n",
            multicv_table(entries)]
    cells = runs_by_cell(entries)
    summary, pairs, sentences = summary_table(cells), paired_table(cells), claims(cells)
    if summary:
        text += ["\n## Summary per method\n", summary]
    if pairs:
        text += ["\n## Leap against each baseline, paired by seed (percentage points, 95% interval over seeds)\n",
                 pairs]
    if sentences:
        text += ["\n## The claims of section 4.2\n", *sentences]
    text += ["\n![held-out training curves](multicv-curves.png)\n"]
    meta = leap_meta_curves(entries)
    if meta:
        text += ["\n## Leap's meta-training\n",
                 "Leap lowers the expected path of the pretraining tasks' training (eq. 5); a task's path depends on "
                 "its dataset, so it is compared per dataset, early against late in each run's meta-training (mean "
                 "over the tasks drawn then, over every seed, ± the half-width of its 95% interval over those "
                 "tasks).\n", meta_objective_table(meta),
                 "\n![Leap's meta-objective and validation error](multicv-meta.png)\n"]
    text += ["\n## Protocol\n"]
    text += [f"- `{p}`" for p in sorted(protocols)]
    text.append(f"- seeds: {', '.join(map(str, seeds))}")
    if len(protocols) > 1:
        text.append("\n**Warning: the runs above used different protocols.**")
    text += ["", "## Data notes", ""] + ([f"- {n}" for n in notes] or ["- none"])
    text += ["", "## Cost", "", cost_table(entries)]
    text += ["", "## Runs", "", "| Held-out | Method | Seed | Meta-steps | Eval steps | Pretrain (s) | Eval (s) |",
             "|---|---|---|---|---|---|---|"]
    for c, r in sorted(entries, key=lambda e: (e[1]["held_out"], e[1]["method"], _seed_order(e[0].get("seed")))):
        text.append(f"| {r['held_out']} | {r['method']} | {c.get('seed')} | {r['meta_steps']} "
                    f"| {r['eval_steps']}/{r['eval_max_steps']} | {r['pretrain_seconds']:.0f} "
                    f"| {r['eval_seconds']:.0f} |")
    md, js = directory / "multicv.md", directory / "multicv.json"
    atomic_write_bytes(md, ("\n".join(text) + "\n").encode())
    atomic_write_json(js, [{**{k: v for k, v in r.items() if k not in ("curve", RUN_DIR)}, "config": c}
                           for c, r in entries])
    figures = [plot_multicv_curves(entries, directory / "multicv-curves.png")]
    if meta:
        figures.append(plot_meta_objective(meta, directory / "multicv-meta.png"))
    return [md, js, *figures]
