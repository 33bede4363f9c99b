"""Settings of the reinforcement-learning benchmarks ``atari`` and ``minatar``.

The generic fields of [`leap.experiments.config.RunConfig`][leap.experiments.config.RunConfig] keep their meaning
where it carries
over (``meta_steps``, ``meta_batch`` = games per meta-batch, ``meta_lr``, Leap's metric
options, ``pretrain_tasks`` = how many games of the pool are used) and are read as
follows where it does not:

==================  ======================================================
``task_steps``      environment steps per game in meta-training (paper: 5M)
``task_batch``      parallel environments, the A2C batch (paper: 32)
``inner_lr``        the agent's learning rate (paper: 1e-4, RMSprop)
``eval_steps``      environment steps per game in evaluation
``eval_batch``      parallel environments in evaluation
``eval_lr``         the agent's learning rate in evaluation
==================  ======================================================

Everything else is RL-specific and lives in ``RunConfig.extra`` (keys of
`EXTRA_KEYS`), filled with the benchmark's defaults by [`resolve_extra()`][leap.experiments.rl.options.resolve_extra].

The agents' and environments' modules (torch, numpy) are imported by the functions that
build their settings, so the options and defaults come without them.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from leap.experiments.rl.games import ATARI_EVAL, ATARI_POOL, MINATAR_EVAL, MINATAR_GAMES, MINATAR_POOL
from leap.util.options import Option, add_options, by_name, check_fields, comma_list

if TYPE_CHECKING:
    from leap.experiments.rl.a2c import A2CSettings
    from leap.experiments.rl.envs import EnvSpec

RL_BENCHMARKS = ("atari", "minatar")
RL_METHODS = ("leap", "reptile", "none")

#: The generic RunConfig defaults of the RL benchmarks (their registry entries' defaults).
#: atari is the paper's scale (appendix F: 16 games x 5M steps x 100 meta-steps; the
#: paper gives no meta learning rate, so Leap's default of 0.1 applies). minatar is the
#: protocol sized on 2 CPU cores (docs/reproduction.md, "Reinforcement learning"): 1M
#: environment steps per game, where every pool game is learned far above the random
#: policy with 16 environments and the agent's rate 1e-3 (a measured sweep); 20 meta-steps
#: of the 3 pool games at SGD 0.01, because a pilot at the paper's 0.1 moved the encoder by
#: 38% of its norm in one update and no game was learned afterwards; evaluation as long as
#: pretraining, 10 seeds per arm.
GENERIC_DEFAULTS: dict[str, dict[str, Any]] = {
    "atari": dict(
        meta_steps=100, meta_batch=16, task_steps=5_000_000, task_batch=32, inner_lr=1e-4, inner_optimizer="rmsprop",
        maml_steps=1, pretrain_tasks=len(ATARI_POOL), eval_steps=5_000_000, eval_batch=32, eval_lr=1e-4,
        val_every=0, metric="energy",
    ),
    "minatar": dict(
        meta_steps=20, meta_batch=3, task_steps=1_000_000, task_batch=16, inner_lr=1e-3, inner_optimizer="rmsprop",
        meta_lr=0.01, maml_steps=1, pretrain_tasks=len(MINATAR_POOL), eval_steps=1_000_000, eval_batch=16,
        eval_lr=1e-3, val_every=0, metric="energy",
    ),
}

_COMMON_EXTRA: dict[str, Any] = dict(
    unroll=5, discount=0.99, entropy_cost=0.01, value_cost=0.5, reward_clip=5.0, max_grad_norm=0.0,
    frame_stack=1, action_set="minimal", sticky_action_prob=None, env_backend="gymnasium",
)
EXTRA_DEFAULTS: dict[str, dict[str, Any]] = {
    "atari": dict(games=list(ATARI_POOL), eval_games=list(ATARI_EVAL), eval_seeds=10, **_COMMON_EXTRA),
    "minatar": dict(games=list(MINATAR_POOL), eval_games=list(MINATAR_EVAL), eval_seeds=10, **_COMMON_EXTRA),
}
EXTRA_KEYS = tuple(EXTRA_DEFAULTS["atari"])


#: The RL-only options (``RunConfig.extra``), declared once: flag, type, range, help.
#: Default None: the benchmark's (EXTRA_DEFAULTS).
RL_OPTIONS = tuple(Option(*args, applies_to=RL_BENCHMARKS, **kwargs) for args, kwargs in (
    (("games", "comma-separated pretraining pool (default: the benchmark's)", comma_list()), {}),
    (("eval_games", "comma-separated games for leap rl-eval (default: held-out games)", comma_list()), {}),
    (("eval_seeds", "seeds per game in leap rl-eval", int), dict(low=1)),
    (("unroll", "A2C unroll length (paper: 5)", int), dict(low=1)),
    (("discount", "discount factor (paper: 0.99)", float), dict(low=0, high=1)),
    (("entropy_cost", "entropy regularization (paper: 0.01)", float), dict(low=0)),
    (("value_cost", "weight of the value error (default 0.5)", float), dict(low=0)),
    (("reward_clip", "rewards clipped to [-c, c] (paper: 5)", float), dict(above=0)),
    (("max_grad_norm", "gradient-norm clipping, 0: none (default)", float), dict(low=0)),
    (("frame_stack", "frames per observation (default 1: 84x84x3 as in the paper)", int), dict(low=1)),
    (("action_set", "game action sets (default: minimal)"), dict(choices=("minimal", "full"))),
    (("sticky_action_prob", "sticky actions (default: the suite's own, ALE v5 0.25, MinAtar 0.1)", float),
     dict(low=0, below=1, optional=True)),
    (("env_backend", "what steps the ALE games of --benchmark atari: gymnasium (ale-py; default) or envpool "
      "(pip install -e '.[envpool]'; the same preprocessing, other emulator seeds)"),
     dict(choices=("gymnasium", "envpool"))),
))
RL_FIELDS = by_name(RL_OPTIONS)
GAME_LISTS = ("games", "eval_games")  # comma-separated on the command line, lists in the config


def add_rl_options(p: argparse.ArgumentParser) -> None:
    """The RL-only flags of ``leap train`` (each applies to atari and minatar only)."""
    add_options(p.add_argument_group("reinforcement learning (--benchmark atari|minatar)"), RL_OPTIONS)


def extra_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """RL flags the user gave, as ``RunConfig.extra`` entries (the registry's hook for the RL
    benchmarks; the command line refuses these flags for any other benchmark)."""
    return {key: getattr(args, key) for key in EXTRA_KEYS if getattr(args, key, None) is not None}


def resolve_extra(benchmark: str, method: str, extra: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``extra`` with the benchmark's RL defaults filled in, every value checked.

    ``values`` are the other RunConfig fields (already resolved): the pool size sets the
    default of ``pretrain_tasks`` and the checks cover what the RL runs read of them.
    """
    if method not in RL_METHODS:
        raise ValueError(f"method {method!r} is not available for --benchmark {benchmark}; choose from "
                         f"{list(RL_METHODS)}")
    unknown = sorted(set(extra) - set(EXTRA_KEYS))
    if unknown:
        raise ValueError(f"unknown RL option(s) {unknown}")
    out = {**EXTRA_DEFAULTS[benchmark], **extra}
    for key in GAME_LISTS:
        games = out[key]
        if not isinstance(games, list) or not games or not all(isinstance(g, str) and g for g in games):
            raise ValueError(f"{key} must be a non-empty list of game names, got {games!r}")
        if benchmark == "minatar":
            bad = [g for g in games if g not in MINATAR_GAMES]
            if bad:
                raise ValueError(f"{key}: unknown MinAtar game(s) {bad}; choose from {list(MINATAR_GAMES)}")
        if len(set(games)) != len(games):
            raise ValueError(f"{key}: a game is listed twice in {games}")
    check_fields(out, RL_FIELDS, {key: key for key in EXTRA_KEYS if key not in GAME_LISTS})
    if values["val_every"]:
        raise ValueError(f"val_every: validation during meta-training is not available for --benchmark {benchmark} "
                         "(use leap rl-eval on the run)")
    if values["pretrain_tasks"] > len(out["games"]):
        raise ValueError(f"pretrain_tasks={values['pretrain_tasks']} but the pool has {len(out['games'])} games")
    # The A2C settings and the environment spec check the rest of the values.
    settings(out, values, evaluation=False)
    settings(out, values, evaluation=True)
    env_spec(benchmark, out)
    return out


def pretrain_default(benchmark: str, extra: dict[str, Any]) -> int:
    """Default ``pretrain_tasks``: the whole pool (the user's ``games`` if given)."""
    return len(extra.get("games") or EXTRA_DEFAULTS[benchmark]["games"])


def prepare_config(benchmark: str, values: dict[str, Any]) -> dict[str, Any]:
    """The registry's hook before a RunConfig takes the benchmark's defaults: an unset
    ``pretrain_tasks`` is the pool's size."""
    if values["pretrain_tasks"] is None:
        values = {**values, "pretrain_tasks": pretrain_default(benchmark, values["extra"])}
    return values


def settings(extra: dict[str, Any], values: dict[str, Any], evaluation: bool) -> A2CSettings:
    """The A2C settings of meta-training (``evaluation`` False) or evaluation runs."""
    from leap.experiments.rl.a2c import A2CSettings

    prefix = "eval" if evaluation else "task"
    lr = values["eval_lr"] if evaluation else values["inner_lr"]
    return A2CSettings(
        steps=values[f"{prefix}_steps"], num_envs=values[f"{prefix}_batch"], unroll=extra["unroll"], lr=lr,
        optimizer=values["inner_optimizer"], discount=extra["discount"], entropy_cost=extra["entropy_cost"],
        value_cost=extra["value_cost"], reward_clip=extra["reward_clip"], max_grad_norm=extra["max_grad_norm"],
    )


def env_spec(benchmark: str, extra: dict[str, Any]) -> EnvSpec:
    from leap.experiments.rl.envs import EnvSpec

    return EnvSpec(benchmark, frame_stack=extra["frame_stack"], action_set=extra["action_set"],
                   sticky_action_prob=extra["sticky_action_prob"], backend=extra["env_backend"])


@dataclass(frozen=True)
class RLSetup:
    """What an RL run needs, derived from a resolved RunConfig."""

    spec: EnvSpec
    pool: tuple[str, ...]
    eval_games: tuple[str, ...]
    eval_seeds: int
    train: A2CSettings
    evaluation: A2CSettings

    @classmethod
    def from_config(cls, cfg: Any) -> RLSetup:
        values = cfg.to_dict()
        extra = resolve_extra(cfg.benchmark, cfg.method, cfg.extra, values)
        return cls(env_spec(cfg.benchmark, extra), tuple(extra["games"][: cfg.pretrain_tasks]),
                   tuple(extra["eval_games"]), extra["eval_seeds"], settings(extra, values, False),
                   settings(extra, values, True))
