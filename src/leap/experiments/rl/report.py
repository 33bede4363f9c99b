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


def summarize(result: dict[str, Any], window: int = 100) -> dict[str, dict[str, dict[str, float]]]:
    """Per game and initialization: mean return over all episodes of a run (the area under
    its learning curve, in spirit) and final return (its last ``window`` episodes), each as
    mean and standard deviation over seeds."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for game, by_label in result["runs"].items():
        for label, runs in by_label.items():
            overall = [float(np.mean(r["episode_returns"])) for r in runs.values() if r["episode_returns"]]
            final = [float(np.mean(r["episode_returns"][-window:])) for r in runs.values() if r["episode_returns"]]
            table.setdefault(game, {})[label] = {
                "mean_return": _mean(overall), "mean_return_std": _std(overall),
                "final_return": _mean(final), "final_return_std": _std(final),
                "seeds": len(runs), "seeds_with_episodes": len(overall),
            }
    return table


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _std(values: list[float]) -> float:
    return float(np.std(values)) if values else math.nan


def _cell(mean: float, std: float) -> str:
    return "no finished episode" if math.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


def summary_table(result: dict[str, Any], window: int = 100) -> str:
    """Markdown: one row per game and initialization."""
    lines = [
        "| Game | Initialization | Seeds | Mean return over training | Final return (last "
        f"{window} episodes) |",
        "|---|---|---|---|---|",
    ]
    for game, by_label in summarize(result, window).items():
        for label, s in by_label.items():
            lines.append(f"| {game} | {LABELS.get(label, label)} | {s['seeds']} | "
                         f"{_cell(s['mean_return'], s['mean_return_std'])} | "
                         f"{_cell(s['final_return'], s['final_return_std'])} |")
    return "\n".join(lines) + "\n"


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

