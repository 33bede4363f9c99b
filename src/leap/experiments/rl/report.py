"""Figure 4-shaped learning curves and a summary table from ``rl-eval.json``.

A run's curve at x environment steps is the mean return of its last ``window``
episodes finished by then (the paper: a moving average over 500 episodes); the figure
shows, per game, the mean of these curves over seeds with a band of ``spread`` standard
deviations across seeds (the paper: two), one line per initialization.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from leap.util.files import atomic_write_text, read_json_record, read_jsonl, save_figure
from leap.util.stats import format_ci, interval_verdict, spread_verdict, std_ratio_ci95

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


def per_seed(runs: dict[str, Any], window: int) -> dict[str, tuple[float, float]]:
    """Seed -> (mean return over all its episodes: the area under its learning curve, in
    spirit; final return: the mean of its last ``window`` episodes), for seeds with episodes."""
    return {seed: (float(np.mean(r["episode_returns"])), float(np.mean(r["episode_returns"][-window:])))
            for seed, r in runs.items() if r["episode_returns"]}


#: ``rl-summary.json``: what the report reads of ``rl-eval.json`` (every episode of every
#: agent, tens of MB), small enough for results/ in the repository.
SUMMARY_FILE = "rl-summary.json"
SUMMARY_FORMAT = "rl-summary-1"


def summarize(result: dict[str, Any], window: int = 100, points: int = 200) -> dict[str, Any]:
    """The report's numbers of an ``rl-eval.json`` result: per game the ``points``-step grid,
    and per initialization and seed its curve on the grid (`curve_on_grid()`, NaN as
    None), its mean return over all episodes and its final return (`per_seed()`); the
    result's other fields are kept. A summary is returned as it is."""
    if result.get("format") == SUMMARY_FORMAT:
        return result
    games: dict[str, Any] = {}
    for game, by_label in result["runs"].items():
        budget = max(r["steps"] for runs in by_label.values() for r in runs.values())
        grid = np.linspace(budget / points, budget, points)
        labels = {}
        for label, runs in by_label.items():
            values = per_seed(runs, window)  # seeds without an episode have no returns: None
            labels[label] = {}
            for seed, r in runs.items():
                curve = curve_on_grid(r["episode_steps"], r["episode_returns"], grid, window)
                mean_return, final_return = values.get(seed, (None, None))
                labels[label][seed] = {"curve": [None if math.isnan(v) else round(float(v), 4) for v in curve],
                                       "mean_return": mean_return, "final_return": final_return,
                                       "episodes": len(r["episode_returns"]), "steps": r["steps"],
                                       "seconds": r.get("seconds")}
        games[game] = {"grid": [float(x) for x in grid], "labels": labels}
    kept = {k: v for k, v in result.items() if k != "runs"}
    return {**kept, "format": SUMMARY_FORMAT, "window": window, "games": games}


#: What every source of a joined comparison must share: the same agents on the same games.
JOIN_FIELDS = ("benchmark", "settings", "spec", "pool", "window")


def join_summaries(sources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One summary (`summarize()`'s format) holding the initializations of every source, e.g.
    Leap's run evaluated against the random encoder and Reptile's evaluated alone
    (``rl-eval --no-baseline``), so that one table and one figure compare the three.

    ``sources``: name (a path, for messages and the record) -> an ``rl-eval.json`` result or
    its summary. Each source must be complete (every game x initialization x seed its
    header names has its agent: an evaluation still running or stopped is refused); the
    sources must share `JOIN_FIELDS`, their games, each game's grid and their seeds, so
    that every difference is paired over the same seeds. A learned initialization (label)
    may come from one source only: two runs' Leap encoders are two initializations, not
    one. The random initialization may come from several, if its agents are the same in
    each (seed s draws the same random encoder, heads and action stream in every
    evaluation on the same device and code). Raises ``ValueError`` (one line) on a damaged
    source or a mismatch. The result names its ``sources`` (run, method, init digest,
    labels)."""
    if len(sources) < 2:
        raise ValueError(f"name at least two rl-eval results to join, got {len(sources)}")
    summaries, agents = {}, {}
    for name, result in sources.items():
        try:
            summaries[name] = summarize(result)
            agents[name] = _agents_by_game(summaries[name])
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            raise ValueError(f"{name}: a damaged rl-eval record ({type(err).__name__}: {err})") from None
        _check_complete(name, summaries[name], agents[name])
    first_name, first = next(iter(summaries.items()))
    # A seed's random draws are the device kind's (a generator's stream): evaluations that
    # record their devices must name one (older files record none).
    devices = {summary.get("device") for summary in summaries.values()} - {None}
    if len(devices) > 1:
        raise ValueError(f"the sources ran their agents on different devices ({sorted(devices)}); a seed's "
                         "random draws differ between devices, so their agents are not paired")
    seeds = _seeds(agents[first_name])
    joined = {k: v for k, v in first.items() if k not in ("games", "init_sha256", "method", "run", "labels")}
    joined["games"] = {game: {"grid": entry["grid"], "labels": {}} for game, entry in first["games"].items()}
    owner: dict[str, str] = {}  # label -> the source it was taken from
    for name, summary in summaries.items():
        for field in JOIN_FIELDS:
            if summary.get(field) != first.get(field):
                raise ValueError(f"{name} and {first_name} differ in {field}: not the same evaluation "
                                 f"({summary.get(field)!r} vs {first.get(field)!r})")
        if set(summary["games"]) != set(first["games"]):
            raise ValueError(f"{name} evaluates {sorted(summary['games'])}, {first_name} {sorted(first['games'])}: "
                             "evaluate the same games")
        if _seeds(agents[name]) != seeds:
            raise ValueError(f"{name} holds seeds {sorted(_seeds(agents[name]), key=int)}, {first_name} "
                             f"{sorted(seeds, key=int)}: evaluate the same seeds, so that every difference is paired")
        for label in {label for by_label in agents[name].values() for label in by_label}:
            if label in owner and label != "random":
                raise ValueError(f"{name} and {owner[label]} both hold '{label}': two initializations under one "
                                 "name; join runs of different methods")
        for game, entry in summary["games"].items():
            if entry["grid"] != first["games"][game]["grid"]:
                raise ValueError(f"{name} and {first_name}: {game}'s agents ran for different numbers of steps")
            for label, by_seed in agents[name][game].items():
                held = joined["games"][game]["labels"]
                if label in held and _without_times(held[label]) != _without_times(by_seed):
                    raise ValueError(f"{name} and {owner[label]}: the random initialization's agents differ on "
                                     f"{game} (evaluated on another device or with other code?); they cannot be "
                                     "the shared arm of a paired comparison")
                held.setdefault(label, by_seed)
                owner.setdefault(label, name)
    order = sorted(owner, key=lambda label: (label == "random", list(owner).index(label)))
    for entry in joined["games"].values():  # the learned initializations first, in the sources' order
        entry["labels"] = {label: entry["labels"][label] for label in order if label in entry["labels"]}
    joined["labels"] = order
    joined["seeds"] = sorted(int(seed) for seed in seeds)
    joined["sources"] = []
    for name, summary in summaries.items():
        mine = [label for label in order if owner[label] == name]
        # a source that is itself a join names its own sources
        for entry in summary.get("sources") or [{"source": name, "run": summary.get("run"),
                                                 "method": summary.get("method"),
                                                 "init_sha256": summary.get("init_sha256"), "labels": mine}]:
            labels = [label for label in entry["labels"] if label in mine]
            if labels:
                joined["sources"].append({**entry, "labels": labels})
    return joined


def _agents_by_game(summary: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """{game: {label: {seed: agent}}} of a summary, its structure checked (KeyError,
    TypeError or ValueError on a damaged one)."""
    by_game = {}
    for game, entry in summary["games"].items():
        if not isinstance(entry["grid"], list) or not entry["labels"]:
            raise ValueError(f"{game}: no grid or no initialization")
        by_game[game] = {}
        for label, by_seed in entry["labels"].items():
            for seed, agent in by_seed.items():
                int(seed)  # a seed is named by its number
                lacking = {"curve", "mean_return", "final_return"} - set(agent)
                if lacking:
                    raise KeyError(f"{game}/{label}/seed {seed} lacks {sorted(lacking)}")
            by_game[game][label] = dict(by_seed)
    return by_game


def _seeds(by_game: dict[str, dict[str, dict[str, Any]]]) -> set[str]:
    return {seed for by_label in by_game.values() for by_seed in by_label.values() for seed in by_seed}


def _check_complete(name: str, summary: dict[str, Any], by_game: dict[str, dict[str, dict[str, Any]]]) -> None:
    """``ValueError`` unless every game x label x seed the source names has its agent (an
    rl-eval still running, or stopped, has written only some)."""
    labels = summary.get("labels") or sorted({label for by_label in by_game.values() for label in by_label})
    seeds = {str(seed) for seed in summary.get("seeds") or _seeds(by_game)}
    for game, by_label in by_game.items():
        for label in labels:
            missing = sorted(seeds - set(by_label.get(label, {})), key=int)
            if missing:
                raise ValueError(f"{name}: an incomplete evaluation ({game}/{label} lacks seeds {missing}); finish "
                                 "it (leap rl-eval resumes where it stopped) before joining")


def _without_times(by_seed: dict[str, Any]) -> dict[str, Any]:
    """An initialization's agents without their wall times (two processes time the same agent differently)."""
    return {seed: {k: v for k, v in agent.items() if k != "seconds"} for seed, agent in by_seed.items()}


def _seed_values(summary: dict[str, Any], game: str, label: str) -> dict[str, tuple[float, float]]:
    """Seed -> (mean return, final return) of the seeds with episodes."""
    return {seed: (v["mean_return"], v["final_return"])
            for seed, v in summary["games"][game]["labels"][label].items() if v["mean_return"] is not None}


def _cell(values: list[float]) -> str:
    return format_ci(values, digits=2) if values else "no finished episode"


def _ratio_cell(values: list[float], reference: list[float]) -> str:
    """``ratio [low, high]`` of the paired samples' standard deviations (`std_ratio_ci95()`)."""
    ratio, low, high = std_ratio_ci95(values, reference)
    return "-" if math.isnan(ratio) else f"{ratio:.2f} [{low:.2f}, {high:.2f}]"


def summary_table(result: dict[str, Any], window: int = 100) -> str:
    """Markdown: one row per game and initialization, each column the mean over seeds ± the
    half-width of its 95% interval; then, per game, the paired difference of each learned
    initialization minus the random one, and of each learned one minus another (`_pairs()`;
    the same seeds: the same heads, environments and action streams, so only the encoder's
    start differs) with a sentence read off its interval; then the ratio of each learned
    initialization's standard deviation over the same seeds to the random one's, with its
    paired 95% interval (Pitman-Morgan), a proxy for the paper's "less volatile
    exploration" (the width of Figure 4's bands).
    ``result``: rl-eval.json's, or its summary (`summarize()`, whose window holds)."""
    summary = summarize(result, window)
    window = summary["window"]
    lines = [
        "| Game | Initialization | Seeds | Mean return over training | Final return (last "
        f"{window} episodes) |",
        "|---|---|---|---|---|",
    ]
    verdicts, spreads = [], []
    pool = set(summary.get("pool", ()))
    for game, entry in summary["games"].items():
        seeds = {label: _seed_values(summary, game, label) for label in entry["labels"]}
        name = f"{game} (pretraining game)" if game in pool else game
        for label, values in seeds.items():
            lines.append(f"| {name} | {LABELS.get(label, label)} | {len(entry['labels'][label])} | "
                         f"{_cell([v[0] for v in values.values()])} | {_cell([v[1] for v in values.values()])} |")
        for label, other in _pairs(list(seeds)):
            values = seeds[label]
            shared = sorted(set(values) & set(seeds[other]))
            if not shared:
                continue
            auc = [values[s][0] - seeds[other][s][0] for s in shared]
            final = [values[s][1] - seeds[other][s][1] for s in shared]
            verdicts.append(f"| {name} | {LABELS.get(label, label)} - {LABELS.get(other, other)} | {_cell(auc)} | "
                            f"{_cell(final)} | {_verdict(auc)} |")
            if other != "random":
                continue
            # The paper credits Leap's gain to "less volatile exploration" (its Figure 4's bands):
            # the spread over the shared seeds of each arm, a ratio with its paired interval.
            over_training = ([values[s][0] for s in shared], [seeds[other][s][0] for s in shared])
            at_the_end = ([values[s][1] for s in shared], [seeds[other][s][1] for s in shared])
            spreads.append(f"| {name} | {LABELS.get(label, label)} / Random init | {_ratio_cell(*over_training)} | "
                           f"{_ratio_cell(*at_the_end)} | {spread_verdict(*over_training)} |")
    if verdicts:
        lines += ["", "| Game | Paired difference | Mean return over training | Final return | Over training, "
                  "the first initialization is |", "|---|---|---|---|---|", *verdicts]
    if spreads:
        lines += ["", "| Game | Standard deviation over paired seeds, ratio [95% interval] | Mean return over "
                  "training | Final return | Over training, the learned initialization's spread is |",
                  "|---|---|---|---|---|", *spreads]
    return "\n".join(lines) + "\n"


def _pairs(labels: list[str]) -> list[tuple[str, str]]:
    """The paired differences the table shows: each learned initialization minus the random
    one, then each learned one minus every learned one after it (Leap - Reptile when both
    were evaluated: `join_summaries()`)."""
    learned = [label for label in labels if label != "random"]
    pairs = [(label, "random") for label in learned if "random" in labels]
    return pairs + [(a, b) for i, a in enumerate(learned) for b in learned[i + 1:]]


def meta_training_table(records: list[dict[str, Any]]) -> str:
    """Markdown: one row per meta-step of the run's ``metrics.jsonl`` ``records``, the games
    in a fixed order (as first trained): each game's late return (the mean of its agent's
    last episodes), each game's path energy (Leap's meta-objective, eq. 5 with p = 2;
    NaN in Reptile's runs) with their mean, and the norm of θ0's step (Algorithm 1, line 13).
    A game a meta-step did not train, and a NaN, show "-"."""
    def number(value: Any, digits: int) -> str:
        return "-" if value is None or value != value else f"{value:.{digits}f}"  # NaN: no finished episode

    order = list(dict.fromkeys(game for r in records for game in r.get("games") or []))
    names = " / ".join(order)
    lines = [f"| meta-step | late return {names} | path energy {names} (mean) | θ0's step |", "|---|---|---|---|"]
    for r in records:
        games = r.get("games") or []
        returns = dict(zip(games, r.get("game_returns") or [], strict=False))
        paths = dict(zip(games, r.get("game_paths") or [], strict=False))
        energy = "-"
        if paths:
            energy = " / ".join(number(paths.get(g), 1) for g in order) + f" ({number(r.get('train_path'), 1)})"
        lines.append(f"| {r.get('step')} | {' / '.join(number(returns.get(g), 2) for g in order)} | {energy} | "
                     f"{number(r.get('meta_step_norm'), 3)} |")
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

    summary = summarize(result, window, points)
    window, games = summary["window"], list(summary["games"])
    cols = min(3, len(games))
    rows = math.ceil(len(games) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(5.5, 4.2 * cols), 3.4 * rows), dpi=120, squeeze=False)
    colors = {"random": "tab:blue", "none": "tab:blue", "leap": "tab:orange", "reptile": "tab:green"}
    for index, (ax, game) in enumerate(zip(axes.flat, games, strict=False)):
        grid = np.asarray(summary["games"][game]["grid"])
        for label, runs in summary["games"][game]["labels"].items():
            curves = np.array([[np.nan if v is None else v for v in r["curve"]] for r in runs.values()], dtype=float)
            with warnings.catch_warnings():  # all-NaN columns (before a seed's first episode) plot as gaps
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(curves, axis=0)
                std = np.nanstd(curves, axis=0)
            color = colors.get(label)
            ax.plot(grid, mean, color=color, label=f"{LABELS.get(label, label)} ({len(runs)} seeds)")
            ax.fill_between(grid, mean - spread * std, mean + spread * std, color=color, alpha=0.2, linewidth=0)
        ax.set_title(game)
        ax.set_xlabel("environment steps")
        if index % cols == 0:  # one label per row: a label on every panel runs into its left neighbour
            ax.set_ylabel(f"episode return (last {window} episodes)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(games):]:
        ax.set_visible(False)
    fig.suptitle(f"{summary.get('benchmark', '')}: mean over seeds, band ±{spread:g} std across seeds", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    save_figure(fig, path)
    plt.close(fig)
    return path


def report_directory(directory: Path) -> list[Path]:
    """``leap report DIR``: the RL report of ``DIR/rl-eval.json``, or of its summary
    ``DIR/rl-summary.json`` alone (as committed under results/); nothing when there is neither."""
    if (directory / RESULT_FILE).is_file() or (directory / SUMMARY_FILE).is_file():
        return write_rl_report(directory)
    return []


def write_rl_report(directory: str | Path, result_file: str = RESULT_FILE, window: int = 100,
                    spread: float = 2.0) -> list[Path]:
    """From ``directory/rl-eval.json`` write its summary ``rl-summary.json`` (`summarize()`;
    for another ``result_file`` NAME.json, NAME-summary.json),
    ``rl-curves.png`` (Figure 4's shape) and ``rl-eval.md`` (summary table); without
    rl-eval.json, the figure and the table from ``rl-summary.json`` (the window it was
    made with). Returns the paths written."""
    directory = Path(directory)
    stem = Path(result_file).stem
    # rl-summary.json beside rl-eval.json; beside another name (--out), NAME-summary.json, never the result itself
    summary_path = directory / (f"{stem.replace('rl-eval', 'rl-summary')}.json" if "rl-eval" in stem
                                else f"{stem}-summary.json")
    written = []
    if (directory / result_file).is_file():
        summary = summarize(read_json_record(directory / result_file, ("runs",)), window)
        atomic_write_text(summary_path, json.dumps(summary) + "\n")
        written.append(summary_path)
    else:
        summary = read_json_record(summary_path, ("games", "window", "format"))
    png = plot_rl_curves(summary, directory / f"{stem.replace('rl-eval', 'rl')}-curves.png", window, spread)
    md = directory / f"{stem}.md"
    title = f"# {summary.get('benchmark', '')}: learned vs random encoder initialization"
    text = f"{title}\n\n{summary_table(summary, window)}"
    records = []
    if (directory / "metrics.jsonl").is_file() and "sources" not in summary:  # a join has no one run
        records = read_jsonl(directory / "metrics.jsonl")
    if records:  # the run's own directory: how its θ0 was meta-trained
        text += ("\n## Meta-training (the run's metrics.jsonl)\n\nEach game of each meta-step is a new agent "
                 "with its own head, environments and action stream.\n\n"
                 f"{meta_training_table(records)}")
    atomic_write_text(md, text)
    return [*written, png, md]

