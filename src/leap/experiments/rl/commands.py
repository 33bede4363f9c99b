"""The RL side of the command line: ``leap train --benchmark atari|minatar`` and
``leap rl-eval RUN`` (also what ``leap evaluate`` runs on an RL run directory).

``leap.cli`` dispatches here. Imports no torch (the command line takes ``rl-eval``'s
options from here): the commands import the agents, the environments and the meta-training
loop when they run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leap.engine.rundir import check_output_dir, holds_run, lock
from leap.experiments.config import (
    EXECUTION_FIELDS,
    RUN_FIELDS,
    SEEDS,
    THREADS,
    RunConfig,
    check_run_dir,
    config_from_args,
    join_workers,
    read_run_config,
    resumed_config,
    run_matcher,
)
from leap.experiments.methods import METHODS
from leap.experiments.rl.options import RL_BENCHMARKS, RLSetup
from leap.experiments.rl.registration import LEGACY_CONFIG
from leap.util import distributed
from leap.util.devices import check_device
from leap.util.errors import CorruptFileError, UsageError
from leap.util.files import (
    atomic_write_json,
    atomic_write_text,
    check_state,
    read_init,
    read_json_record,
    require_keys,
)
from leap.util.options import Option, comma_list
from leap.util.progress import Progress

if TYPE_CHECKING:
    import torch

    from leap.experiments.rl.a2c import AgentCurve

RESULT_FILE = "rl-eval.json"
BASELINE = "random"  # the label of the randomly initialized encoder


def check_rl_games(setup: RLSetup) -> None:
    from leap.experiments.rl.envs import check_games

    try:
        check_games(setup.spec, list(setup.pool) + list(setup.eval_games))
    except (ImportError, ValueError) as err:
        raise UsageError(str(err)) from err


def rl_postfix(metrics: dict[str, Any]) -> dict[str, str]:
    return {"loss": f"{metrics['train_loss']:.3f}", "return": f"{metrics['train_return']:.2f}"}


class RLProgress(Progress):
    """Progress over meta-steps (loss, late-training return) and, since a meta-step can
    take hours at the paper's scale, one line per game trained."""

    def __init__(self, total: int, desc: str, enabled: bool, bar: bool = True) -> None:
        super().__init__(total, desc, enabled, postfix=rl_postfix, bar=bar)
        self._game_start = time.perf_counter()

    def game(self, step: int, index: int, game: str, curve: AgentCurve) -> None:
        """A line for game ``index`` of meta-step ``step`` (0-based; a resumed run's own count)."""
        seconds = time.perf_counter() - self._game_start
        self.write(f"{self.desc}: meta-step {step + 1}/{self.total}, game {index + 1} {game}: {curve.steps} steps, "
                   f"{len(curve.episode_returns)} episodes, late return "
                   f"{curve.mean_return(max(1, len(curve.episode_returns) // 10)):.2f} ({seconds:.0f} s)")
        self._game_start = time.perf_counter()


def train_from_args(args: argparse.Namespace) -> int:
    """``leap train --benchmark atari|minatar`` (the registry's entry point)."""
    return train_rl(config_from_args(args, args.method), args)


def evaluate_from_args(args: argparse.Namespace) -> int:
    """``leap evaluate RUN`` of an RL run: learned vs random encoder, curves of returns."""
    given = [flag for flag, value in (("--split", args.split != "test"), ("--engine", args.engine is not None),
                                      ("--compile", args.compile is not None),
                                      ("--checkpoint", args.checkpoint is not None)) if value]
    if given:
        raise UsageError(f"{', '.join(given)}: not options of an RL run's evaluation (agents trained on games)")
    rl_evaluate(Path(args.run), eval_steps=args.eval_steps, device=args.device,
                seeds=None if args.seed is None else [args.seed])
    return 0


def train_rl(cfg: RunConfig, args: argparse.Namespace) -> int:
    """``leap train`` for an RL benchmark: config.json, metrics.jsonl, checkpoints,
    init.safetensors (the encoder), with resume and signal handling from ``fit``."""
    from leap.engine.loop import fit
    from leap.experiments.rl.meta import RLMetaTrainer

    join_workers(cfg.device, args.dist_timeout)  # under torchrun: each rank trains a share of each meta-batch
    check_device(cfg.device)
    setup = RLSetup.from_config(cfg)
    check_rl_games(setup)
    out = Path(args.out)
    cfg = resumed_config(out, cfg, args)
    check_run_dir(out, cfg, args.overwrite, extending=args.resume)
    trainer = RLMetaTrainer(cfg, setup)
    main = distributed.is_main()  # under torchrun only rank 0 writes and shows progress
    progress = RLProgress(cfg.meta_steps, cfg.method, main and trainer.trains, bar=not args.no_progress)
    trainer.on_game = progress.game
    try:
        info = fit(trainer, out, resume=args.resume, overwrite=args.overwrite, same_run=run_matcher(cfg),
                   checkpoint_every=args.checkpoint_every,
                   keep_checkpoints=args.keep_checkpoints,
                   max_failed_steps=args.max_failed_steps, tensorboard=args.tensorboard, on_step=progress.update,
                   log=lambda msg: print(f"{distributed.prefix()}leap: {msg}", file=sys.stderr))
    finally:
        progress.close()
    if main:
        print(f"{cfg.method}: wrote {out / 'init.safetensors'} ({info['train_seconds']:.1f} s)")
    return 0


# ---------------------------------------------------------------------- evaluation
def load_run_config(run: Path, overrides: dict[str, Any]) -> RunConfig:
    """An RL run's config ([`read_run_config()`][leap.experiments.config.read_run_config]); another benchmark's run
    is refused."""
    cfg = read_run_config(run, overrides)
    if cfg.benchmark not in RL_BENCHMARKS:
        raise UsageError(f"{run}: a {cfg.benchmark} run; leap rl-eval is for {' and '.join(RL_BENCHMARKS)} runs")
    return cfg


def rl_evaluate(run: Path, games: list[str] | None = None, seeds: list[int] | None = None,
                eval_steps: int | None = None, device: str | None = None, out: Path | None = None,
                baseline: bool = True, progress: bool = True, merge: list[Path] | None = None) -> dict[str, Any]:
    """Evaluate the run's encoder init (and a random one) on ``games`` x ``seeds``,
    write ``rl-eval.json`` (episode returns of every run) and the figure.

    Resumable: runs already in an existing result file with the same settings are kept; a
    result file of another init, other settings or another device kind is refused (`UsageError`), not replaced.
    ``merge``: result files of other ``rl-eval`` processes (e.g. on a copy of the run
    directory, other seeds, to use another core) whose agents are kept as well; each must
    evaluate the same init with the same settings, else nothing is written.
    """
    from leap.experiments.rl.meta import RLMetaTrainer, evaluate_init
    from leap.experiments.rl.report import summary_table, write_rl_report

    overrides: dict[str, Any] = {}
    if eval_steps is not None:
        overrides["eval_steps"] = eval_steps
    if device is not None:
        overrides["device"] = device
    if games is not None:
        overrides["extra"] = {**_saved_extra(run), "eval_games": games}
    cfg = load_run_config(run, overrides)
    check_device(cfg.device)
    setup = RLSetup.from_config(cfg)
    check_rl_games(setup)
    seeds = list(range(setup.eval_seeds)) if seeds is None else seeds
    if not seeds or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds: need distinct seeds, got {seeds}")
    run_dir = run if run.is_dir() else run.parent
    lock(run_dir)  # no train --overwrite replaces the run while its agents are evaluated
    inits: dict[str, dict[str, torch.Tensor] | None] = {}
    digest = None
    if METHODS[cfg.method].meta_trains:
        try:
            inits[cfg.method], digest = read_init(run, cfg.device)
            # The encoder of this benchmark's agent, as meta-training builds it (heads are per game).
            template = RLMetaTrainer(cfg, setup).init_state()
            check_state(inits[cfg.method], template, str(run / "init.safetensors" if run.is_dir() else run))
        except (FileNotFoundError, CorruptFileError) as err:
            raise UsageError(str(err)) from err
    if baseline or not inits:
        inits[BASELINE] = None
    out = out if out is not None else run_dir / RESULT_FILE
    header = {
        "benchmark": cfg.benchmark, "method": cfg.method, "games": list(setup.eval_games), "seeds": seeds,
        "labels": list(inits), "settings": dataclasses.asdict(setup.evaluation), "spec": dataclasses.asdict(setup.spec),
        "run": str(run_dir), "init_sha256": digest, "pool": list(setup.pool),
        # a seed's random draws (the random encoder, the action stream) are the device kind's
        "device": str(cfg.device).split(":")[0],
    }
    # Runs in an earlier result file with the same settings, of the same init, are kept
    # (the one "holds this run" policy).
    same = {k: header[k] for k in ("settings", "spec", "benchmark", "init_sha256")}

    def same_run(previous: dict[str, Any]) -> bool:
        # A seed's agents are drawn by the device kind's generators: agents of another kind
        # are not this evaluation's, not even for another seed (a seed's arms are paired). A
        # record written before the device was recorded is taken at its word.
        previous = with_legacy_spec(previous)
        return ({k: previous.get(k) for k in same} == same
                and previous.get("device", header["device"]) == header["device"])

    done = None
    if holds_run(out.parent, same_run, record=out.name):
        done = {"runs": json.loads(out.read_text()).get("runs", {})}
    elif out.exists():
        # An evaluation costs hours of agents: one of another init (the run trained on) or of
        # other settings is kept, never replaced; the new one goes to another file.
        raise UsageError(f"{out} holds an rl-eval result of another init, other settings or another device kind (or "
                         "an unreadable one); "
                         "name another result file with --out, or move it away, to run this evaluation")
    for other in merge or []:
        done = {"runs": merged_runs(done["runs"] if done else {}, Path(other), same_run, header)}
    if done:  # the file names every seed its runs hold: earlier, merged and this command's
        kept = {int(seed) for labels in done["runs"].values() for agents in labels.values() for seed in agents}
        header["seeds"] = sorted(kept | set(seeds))
    total = len(setup.eval_games) * len(header["seeds"]) * len(inits)

    def save(result: dict[str, Any]) -> None:
        atomic_write_json(out, {**header, "runs": result["runs"]})
        if progress:
            count = sum(len(s) for g in result["runs"].values() for s in g.values())
            print(f"rl-eval: {count} runs of {total} in {out}", file=sys.stderr)

    result = evaluate_init(setup.spec, setup.evaluation, list(setup.eval_games), seeds, inits, cfg.device, done,
                           on_run=save)
    final = {**header, "runs": result["runs"]}
    atomic_write_json(out, final)
    write_rl_report(out.parent, result_file=out.name)
    print(summary_table(final), end="")
    return final


def merged_runs(runs: dict[str, Any], other: Path, same_run: Any, header: dict[str, Any]) -> dict[str, Any]:
    """``runs`` ({game: {label: {seed: agent}}}) with the agents of the result file
    ``other`` added; ``UsageError`` when ``other`` is unreadable or damaged, evaluates
    another init, other settings or another device kind (``same_run`` is False), holds a game or an
    initialization this evaluation (``header``'s games and labels) does not, or holds an
    agent that ``runs`` holds with other returns. ``runs`` is not changed."""
    if other.is_dir():
        other = other / RESULT_FILE
    if not holds_run(other.parent, same_run, record=other.name):
        raise UsageError(f"--merge {other}: not an rl-eval result of this run's init and settings (a missing or "
                         "unreadable file, another init, other evaluation settings, or agents of another device kind)")
    merged = json.loads(json.dumps(runs))  # a deep copy: a refused merge leaves nothing half-changed
    try:
        for game, labels in json.loads(other.read_text())["runs"].items():
            for label, seeds in labels.items():
                if game not in header["games"] or label not in header["labels"]:
                    raise UsageError(f"--merge {other}: holds {game}/{label}, which this evaluation does not run "
                                     f"(games {header['games']}, initializations {header['labels']})")
                mine = merged.setdefault(game, {}).setdefault(label, {})
                for seed, agent in seeds.items():
                    int(seed)  # a seed is named by its number
                    if seed in mine and mine[seed]["episode_returns"] != agent["episode_returns"]:
                        raise UsageError(f"--merge {other}: {game}/{label}/seed {seed} is in both files with "
                                         "different returns; keep one of them")
                    mine.setdefault(seed, agent)
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise UsageError(f"--merge {other}: a damaged runs record ({type(err).__name__}: {err})") from None
    return merged


def with_legacy_spec(record: dict[str, Any]) -> dict[str, Any]:
    """An rl-eval record whose ``spec`` names the environment backend: a file written before
    the backend was an option stepped the legacy one."""
    legacy = {"backend": LEGACY_CONFIG["extra"]["env_backend"]}
    return {**record, "spec": {**legacy, **(record.get("spec") or {})}}


def rl_join(sources: list[Path], out: Path, progress: bool = True) -> dict[str, Any]:
    """``leap rl-join SOURCES --out DIR``: one table and one figure of several evaluations of
    the same games and settings (e.g. Leap's run, evaluated with the random encoder, and
    Reptile's, evaluated with ``--no-baseline``): ``DIR/rl-summary.json`` (the joined summary,
    `join_summaries()`), ``DIR/rl-eval.md`` and ``DIR/rl-curves.png``, which ``leap report
    DIR`` redraws. A source is a run directory (its rl-eval.json, else its rl-summary.json)
    or such a file. Everything is read and checked before anything is written; ``DIR`` may
    hold an earlier join (replaced), nothing else of leap's."""
    from leap.experiments.rl.report import SUMMARY_FILE, join_summaries, summary_table, write_rl_report

    # A source named twice (another spelling of one file) is one; each is named as given, so
    # that the joined summary holds no machine's absolute paths.
    files = {path.resolve(): path for path in reversed([_result_file(source) for source in sources])}
    results = {str(path): _read_result(path) for path in reversed(files.values())}
    check_output_dir(out)
    if out.resolve() in {path.parent for path in files}:
        raise UsageError(f"--out {out}: a source's own directory; the joined report goes to a directory of its own")
    for name in ("config.json", "metrics.jsonl", RESULT_FILE):
        if (out / name).exists():
            raise UsageError(f"--out {out}: holds {name} (a run or an evaluation); the joined report goes to a "
                             "directory of its own")
    earlier = out / SUMMARY_FILE
    if earlier.exists() and "sources" not in _read_result(earlier):
        raise UsageError(f"--out {out}: holds an rl-summary.json of one evaluation, not a join; "
                         "name another directory")
    try:
        joined = join_summaries(results)
    except ValueError as err:
        raise UsageError(f"rl-join: {err}") from None
    unknown = [name for name, result in results.items() if result.get("device") is None]
    if unknown and progress:
        print(f"rl-join: note: {', '.join(unknown)} do(es) not record the device its agents ran on (an rl-eval "
              "before 2026-12-05); the pairing assumes every source ran on the same kind", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / SUMMARY_FILE, json.dumps(joined) + "\n")  # keys in the table's order, not sorted
    write_rl_report(out)
    if progress:
        print(summary_table(joined), end="")
    return joined


def _result_file(source: Path) -> Path:
    """The file of an rl-eval result named by ``source``: the file itself, or in a run
    directory its rl-eval.json, else its rl-summary.json."""
    from leap.experiments.rl.report import SUMMARY_FILE

    if source.is_dir():
        return source / RESULT_FILE if (source / RESULT_FILE).is_file() else source / SUMMARY_FILE
    return source


def _read_result(path: Path) -> dict[str, Any]:
    """An rl-eval result or its summary (`UsageError`, one line, otherwise); a spec written
    before the environment backend was an option names the backend it ran."""
    from leap.experiments.rl.report import SUMMARY_FORMAT

    try:
        record = read_json_record(path)  # parsed once: an rl-eval.json holds tens of MB of episodes
        require_keys(record, path, ("games", "window") if record.get("format") == SUMMARY_FORMAT else ("runs",))
    except CorruptFileError as err:
        raise UsageError(str(err)) from None
    return with_legacy_spec(record) if isinstance(record.get("spec"), dict) else record


def cmd_rl_join(args: argparse.Namespace) -> int:
    rl_join([Path(s) for s in args.sources], Path(args.out), progress=not args.no_progress)
    return 0


def _saved_extra(run: Path) -> dict[str, Any]:
    config_path = (run if run.is_dir() else run.parent) / "config.json"
    try:
        return dict(json.loads(config_path.read_text()).get("extra", {}))
    except (OSError, ValueError):
        return {}


def cmd_rl_eval(args: argparse.Namespace) -> int:
    rl_evaluate(Path(args.run), args.games, args.seeds, args.eval_steps, args.device,
                None if args.out is None else Path(args.out), baseline=not args.no_baseline,
                progress=not args.no_progress, merge=[Path(f) for f in args.merge or []])
    return 0


def add_rl_eval_parser(sub: Any) -> None:
    """Register ``leap rl-eval`` on the CLI's subparsers."""
    p = sub.add_parser("rl-eval", help="RL: train agents from a learned encoder init and from a random one")
    Option("run", "run directory of leap train --benchmark atari|minatar (or its init.safetensors)",
           flag="run").add_to(p)
    Option("games", "comma-separated games (default: the run's --eval-games)", comma_list()).add_to(p)
    dataclasses.replace(SEEDS, help="comma-separated seeds (default: 0..eval_seeds-1)").add_to(p)
    dataclasses.replace(RUN_FIELDS["eval_steps"], help="environment steps per game and seed (default: the run's)",
                        applies_to=None).add_to(p)
    dataclasses.replace(RUN_FIELDS["device"], default=None, help="cpu, cuda or cuda:N (default: the run's)").add_to(p)
    Option("out", f"result file (default: RUN/{RESULT_FILE}); the figure is written beside it").add_to(p)
    Option("no_baseline", "skip the random-init runs", action="store_true").add_to(p)
    Option("merge", "comma-separated rl-eval result files (or run directories) of the same init and settings "
           "whose agents are kept, e.g. other seeds evaluated on a copy of RUN beside this process",
           comma_list()).add_to(p)
    EXECUTION_FIELDS["no_progress"].add_to(p)
    THREADS.add_to(p)
    # --out names a file (checked before anything runs); the figure needs matplotlib.
    p.set_defaults(func=cmd_rl_eval, out_is_file=True, needs=("matplotlib",))

    p = sub.add_parser("rl-join", help="RL: one table and figure of several rl-eval results of the same games "
                       "(e.g. Leap's run and Reptile's, evaluated with --no-baseline)")
    Option("sources", "comma-separated rl-eval results of the same games and settings: run directories, or "
           "rl-eval.json / rl-summary.json files", comma_list(), flag="sources").add_to(p)
    Option("out", "directory of the joined report: rl-summary.json, rl-eval.md, rl-curves.png (leap report "
           "redraws them)", required=True).add_to(p)
    EXECUTION_FIELDS["no_progress"].add_to(p)
    p.set_defaults(func=cmd_rl_join, needs=("matplotlib",))
