"""Figure 4-shaped learning curves and a summary table from ``rl-eval.json``.

A run's curve at x environment steps is the mean return of its last ``window``
episodes finished by then (the paper: a moving average over 500 episodes); the figure
shows, per game, the mean of these curves over seeds with a band of ``spread`` standard
deviations across seeds (the paper: two), one line per initialization.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from leap.util.files import atomic_write_text, read_json_record, save_figure
from leap.util.stats import format_ci, interval_verdict

LABELS = {"leap": "Leap", "reptile": "Reptile", "none": "Random init", "random": "Random init"}
RESULT_FILE = "rl-eval.json"


def curve_on_grid(episode_steps: list[int], episode_returns: list[float], grid: np.ndarray,
                  window: int) -> np.ndarray:
    """Mean return of the last ``window`` episodes that ended at or before each grid
    point (NaN before the first episode)."""
    steps = np.asarray(episode_steps, dtype=np.int64)
    returns = np.asarray(episode_returns, dtype=np.float64)
    cumulative = np.concatenate([[0.0], np.cumsum(returns)])
    ended = np.searchsorted(steps, grid, side="right")  # episodes finished by each grid point
    first = np.maximum(ended - window, 0)
    count = ended - first
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (cumulative[ended] - cumulative[first]) / np.maximum(count, 1), np.nan)


def seed_curves(runs: dict[str, Any], grid: np.ndarray, window: int) -> np.ndarray:
    """(seeds, len(grid)) curves of one game and initialization."""
    return np.stack([curve_on_grid(r["episode_steps"], r["episode_returns"], grid, window) for r in runs.values()])


def per_seed(runs: dict[str, Any], window: int) -> dict[str, tuple[float, float]]:
    """Seed -> (mean return over all its episodes: the area under its learning curve, in
    spirit; final return: the mean of its last ``window`` episodes), for seeds with episodes."""
    return {seed: (float(np.mean(r["episode_returns"])), float(np.mean(r["episode_returns"][-window:])))
            for seed, r in runs.items() if r["episode_returns"]}


def _cell(values: list[float]) -> str:
    return format_ci(values, digits=2) if values else "no finished episode"


def summary_table(result: dict[str, Any], window: int = 100) -> str:
    """Markdown: one row per game and initialization, each column the mean over seeds ± the
    half-width of its 95% interval; then, per game, the paired difference of each learned
    initialization minus the random one (the same seeds: the same heads, environments and
    action streams, so only the encoder's start differs) with a sentence read off its
    interval."""
    lines = [
        "| Game | Initialization | Seeds | Mean return over training | Final return (last "
        f"{window} episodes) |",
        "|---|---|---|---|---|",
    ]
    verdicts = []
    pool = set(result.get("pool", ()))
    for game, by_label in result["runs"].items():
        seeds = {label: per_seed(runs, window) for label, runs in by_label.items()}
        name = f"{game} (pretraining game)" if game in pool else game
        for label, values in seeds.items():
            lines.append(f"| {name} | {LABELS.get(label, label)} | {len(by_label[label])} | "
                         f"{_cell([v[0] for v in values.values()])} | {_cell([v[1] for v in values.values()])} |")
        for label, values in seeds.items():
            if label == "random" or "random" not in seeds:
                continue
            shared = sorted(set(values) & set(seeds["random"]))
            if not shared:
                continue
            auc = [values[s][0] - seeds["random"][s][0] for s in shared]
            final = [values[s][1] - seeds["random"][s][1] for s in shared]
            verdicts.append(f"| {name} | {LABELS.get(label, label)} - Random init | {_cell(auc)} | {_cell(final)} | "
                            f"{_verdict(auc)} |")
    if verdicts:
        lines += ["", "| Game | Paired difference | Mean return over training | Final return | Over training, "
                  "the learned initialization is |", "|---|---|---|---|---|", *verdicts]
    return "\n".join(lines) + "\n"


def _verdict(differences: list[float]) -> str:
    """Faster, slower or indistinguishable, from the 95% interval of the paired differences."""
    return interval_verdict(differences, below="slower", above="faster")


def plot_rl_curves(result: dict[str, Any], path: str | Path, window: int = 100, spread: float = 2.0,
                   points: int = 200) -> Path:
    """One panel per game: mean episode return against environment steps, mean over
    seeds with a band of ``spread`` standard deviations, one line per initialization."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    games = list(result["runs"])
    cols = min(3, len(games))
    rows = math.ceil(len(games) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(5.5, 4.2 * cols), 3.4 * rows), dpi=120, squeeze=False)
    colors = {"random": "tab:blue", "none": "tab:blue", "leap": "tab:orange", "reptile": "tab:green"}
    for ax, game in zip(axes.flat, games, strict=False):
        by_label = result["runs"][game]
        budget = max(r["steps"] for runs in by_label.values() for r in runs.values())
        grid = np.linspace(budget / points, budget, points)
        for label, runs in by_label.items():
            curves = seed_curves(runs, grid, window)
            with warnings.catch_warnings():  # all-NaN columns (before a seed's first episode) plot as gaps
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(curves, axis=0)
                std = np.nanstd(curves, axis=0)
            color = colors.get(label)
            ax.plot(grid, mean, color=color, label=f"{LABELS.get(label, label)} ({len(runs)} seeds)")
            ax.fill_between(grid, mean - spread * std, mean + spread * std, color=color, alpha=0.2, linewidth=0)
        ax.set_title(game)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(f"episode return (last {window} episodes)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(games):]:
        ax.set_visible(False)
    fig.suptitle(f"{result.get('benchmark', '')}: mean over seeds, band ±{spread:g} std across seeds", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    save_figure(fig, path)
    plt.close(fig)
    return path


def report_directory(directory: Path) -> list[Path]:
    """``leap report DIR``: the RL report of ``DIR/rl-eval.json``, nothing when there is none."""
    return write_rl_report(directory) if (directory / RESULT_FILE).is_file() else []


def write_rl_report(directory: str | Path, result_file: str = RESULT_FILE, window: int = 100,
                    spread: float = 2.0) -> list[Path]:
    """From ``directory/rl-eval.json`` write ``rl-curves.png`` (Figure 4's shape) and
    ``rl-eval.md`` (summary table); returns the paths written."""
    directory = Path(directory)
    result = read_json_record(directory / result_file, ("runs",))
    stem = Path(result_file).stem.replace("rl-eval", "rl")
    png = plot_rl_curves(result, directory / f"{stem}-curves.png", window, spread)
    md = directory / f"{Path(result_file).stem}.md"
    atomic_write_text(md, f"# {result.get('benchmark', '')}: learned vs random encoder initialization\n\n"
                  f"{summary_table(result, window)}")
    return [png, md]

