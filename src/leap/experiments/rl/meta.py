"""Meta-training an agent's encoder initialization across games, and evaluating it.

`RLMetaTrainer` is Algorithm 1 with games as tasks (appendix F): each meta-step
draws a batch of games from the pretraining pool, trains an agent on each from θ0 (the
encoder; heads fresh per game) with A2C for a budget of environment steps while the
hook accumulates the meta-gradient on the fly; ``fit`` then lets the meta-optimizer step
on θ0 (at the run's meta learning rate schedule, rolled back if θ0 becomes non-finite).
It is a [`leap.engine.loop.Trainer`][leap.engine.loop.Trainer] (``step``, ``validate``, ``state_dict``, ``init_state``,
...), so RL runs get the same metrics.jsonl, checkpoints, resume and signal handling
as the supervised benchmarks. Checkpoints fall between meta-steps.

`evaluate_init()` trains agents from a learned encoder and from a random one on the
same seeds: with one seed, both runs get the same heads, environment seeds and action
sampling stream, so the comparison is paired and only the encoder's start differs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from leap.engine.inner import make_optimizer
from leap.engine.loop import HookTrainerState, StepInterrupted
from leap.engine.meta_update import normalize_meta_gradient, without_accumulated_tasks
from leap.experiments.config import RunConfig
from leap.experiments.methods import METHODS
from leap.experiments.rl.a2c import A2CSettings, AgentCurve, train_agent
from leap.experiments.rl.agent import ActorCritic, encoder_only, make_agent
from leap.experiments.rl.envs import EnvSpec, make_vec_env, observation_channels
from leap.experiments.rl.options import RLSetup
from leap.learners import MetaLearner
from leap.util import distributed
from leap.util.seeding import derive_seed, derived_generator


def make_game_agent(spec: EnvSpec, in_channels: int, num_actions: int, *seed_parts: object) -> ActorCritic:
    """A fresh agent whose every parameter comes from a seed derived from ``seed_parts``
    (the global torch RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(*seed_parts))
        return make_agent(spec.suite, in_channels, num_actions)


def train_game(
    spec: EnvSpec,
    game: str,
    settings: A2CSettings,
    seed_parts: tuple[object, ...],
    device: str,
    init: dict[str, Tensor] | None = None,
    learner: MetaLearner | None = None,
) -> AgentCurve:
    """Train a fresh agent on ``game``; everything random derives from ``seed_parts``.

    The encoder starts from ``init`` (encoder entries of a state dict) or from the
    learner's θ0 (``learner.to``, after ``init_task``); otherwise it keeps its random
    initialization. Heads are always fresh.
    """
    env_seeds = [derive_seed(*seed_parts, "env", i) for i in range(settings.num_envs)]
    env = make_vec_env(spec, game, env_seeds)
    try:
        model = make_game_agent(spec, env.obs_shape[0], env.num_actions, *seed_parts, "agent").to(device)
        if init is not None:
            load_encoder(model, init)
        if learner is not None:
            learner.init_task()
            learner.to(model)
        generator = derived_generator(*seed_parts, "act", device=device)
        return train_agent(model, env, settings, generator, learner)
    finally:
        env.close()


@torch.no_grad()
def load_encoder(model: ActorCritic, init: dict[str, Tensor]) -> None:
    """Copy the encoder entries of ``init`` into ``model`` (shapes checked)."""
    for name, p in model.named_parameters():
        if not encoder_only(name, p):
            continue
        if name not in init:
            raise ValueError(f"initialization lacks encoder parameter {name!r}")
        if init[name].shape != p.shape:
            raise ValueError(f"initialization {name}: shape {tuple(init[name].shape)}, the agent's is "
                             f"{tuple(p.shape)} (another benchmark or frame stack?)")
        p.copy_(init[name])


def make_rl_learner(cfg: RunConfig, template: ActorCritic) -> MetaLearner | None:
    """The hook of ``cfg.method`` on the encoder only (None for a random init)."""
    return METHODS[cfg.method].learner(template, cfg, params=encoder_only)


class RLMetaTrainer(HookTrainerState):
    """State of one RL meta-training run: θ0 (in the learner), meta-optimizer, counters.

    A [`leap.engine.loop.Trainer`][leap.engine.loop.Trainer] for [`leap.engine.loop.fit()`][leap.engine.loop.fit].
    The games of
    meta-step s, their agents' heads, environment seeds and action streams derive from
    (seed, s, position in the meta-batch), so a resumed run repeats exactly what an
    uninterrupted one would have done.
    """

    def __init__(self, cfg: RunConfig, setup: RLSetup | None = None) -> None:
        self.cfg = cfg
        self.setup = setup or RLSetup.from_config(cfg)
        self.config, self.meta_steps, self.meta_batch = cfg.to_dict(), cfg.meta_steps, cfg.meta_batch
        spec = self.setup.spec
        # The template's heads are never used: every game gets its own.
        self.model = make_game_agent(spec, observation_channels(spec), 1, cfg.seed, "init").to(cfg.device)
        self.learner = make_rl_learner(cfg, self.model)
        self.meta_opt: torch.optim.Optimizer | None = None
        if self.learner is not None:
            self.meta_opt = make_optimizer(cfg.meta_optimizer, self.learner.parameters(), cfg.meta_lr)
        super().__init__()  # fit's bookkeeping (step_count, stop_requests, ...)
        # Called after each game: (meta-step, 0-based; position in the meta-batch; game; its curve).
        self.on_game: Callable[[int, int, str, AgentCurve], None] | None = None
        # The games of the meta-step in flight this process already trained (their summaries,
        # with their positions in the meta-batch), kept in checkpoints: alone, a stop requested
        # during a meta-step takes effect after the game in flight, and the resumed run
        # continues with the next game (StepInterrupted).
        self.partial: list[dict[str, Any]] = []

    @property
    def trains(self) -> bool:
        return self.learner is not None

    def validate(self) -> dict[str, float]:
        """No validation during RL meta-training: held-out games are ``leap rl-eval``'s."""
        return {}

    def draw_games(self, step: int) -> list[str]:
        """Meta-step ``step``'s games: drawn without replacement from the pool when the
        meta-batch fits in it (as the paper samples 16 of 27 games), else with."""
        pool = self.setup.pool
        pick = derived_generator(self.cfg.seed, "rl-games", step)
        if self.cfg.meta_batch <= len(pool):
            order = torch.randperm(len(pool), generator=pick)[: self.cfg.meta_batch]
        else:
            order = torch.randint(len(pool), (self.cfg.meta_batch,), generator=pick)
        return [pool[i] for i in order.tolist()]

    def step(self) -> dict[str, Any]:
        cfg = self.cfg
        assert self.learner is not None and self.meta_opt is not None
        games = self.draw_games(self.step_count)
        done = {g["index"] for g in self.partial}  # a resumed meta-step continues with its next game
        # Under torchrun this rank trains a contiguous share of the meta-batch; alone, all of it.
        for index in distributed.shard(range(len(games))):
            if index in done:
                continue
            if self.stop_requests and not distributed.active():
                # Alone, a stop takes effect between two games; under torchrun the ranks
                # agree on it in the meta-gradient's all-reduce and stop after the meta-step.
                raise StepInterrupted(f"after game {index} of {len(games)}")
            start = time.perf_counter()
            curve = train_game(self.setup.spec, games[index], self.setup.train,
                               (cfg.seed, "rl-task", self.step_count, index), cfg.device, learner=self.learner)
            self.partial.append({"index": index, "game": curve.game, "loss": float(curve.losses.float().mean()),
                                 "steps": curve.steps,
                                 # late return: the mean of the game's last 10% of episodes
                                 "return": curve.mean_return(max(1, len(curve.episode_returns) // 10)),
                                 # Leap's meta-objective: the game's path energy (or length); NaN for others
                                 "path": self.learner.last_path if self.learner is not None else float("nan"),
                                 "seconds": time.perf_counter() - start})
            if self.on_game is not None:
                self.on_game(self.step_count, index, games[index], curve)
        start = time.perf_counter()
        # Each game's (loss, late return, environment steps, path) at its position in the meta-batch,
        # zeros at the other ranks' positions (float64: exact for the step counts), summed over
        # the ranks with the meta-gradient and the stop flags in one all-reduce, so that every
        # rank logs what a single process would. The meta-update itself is fit's (meta_step).
        device = next(self.learner.parameters()).device  # the collective's tensors share one device
        table = torch.zeros(cfg.meta_batch, 4, dtype=torch.float64)
        for g in self.partial:
            # a game checkpointed before paths were logged has none
            table[g["index"]] = torch.tensor([g["loss"], g["return"], g["steps"], g.get("path", math.nan)],
                                             dtype=torch.float64)
        table, control = table.to(device), self.stop_flags(device)
        valid = self.meta_gradient_tasks = normalize_meta_gradient(self.learner, [table, control])
        self.agree_on_stop(control)
        mine, self.partial = self.partial, []
        losses = [v for v in table[:, 0].tolist() if np.isfinite(v)]
        returns = [v for v in table[:, 1].tolist() if np.isfinite(v)]
        paths = [v for v in table[:, 3].tolist() if np.isfinite(v)]
        return {
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            # No error rate in RL; NaN keeps the column that the supervised runs log.
            "train_error": float("nan"),
            "train_return": float(np.mean(returns)) if returns else float("nan"),
            "games": games,
            "game_returns": table[:, 1].tolist(),
            "env_steps": int(table[:, 2].sum()),
            # Leap's meta-objective (section 2.3), the mean over the games: it should fall
            "train_path": float(np.mean(paths)) if paths else float("nan"),
            "game_paths": table[:, 3].tolist(),
            "valid_tasks": valid,
            "dropped_tasks": cfg.meta_batch - valid,
            # this rank's games (over every segment) and the wait for the others in the all-reduce
            "seconds": sum(g["seconds"] for g in mine) + time.perf_counter() - start,
        }

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "partial": [dict(g) for g in self.partial]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        partial = [{"index": i, **g} for i, g in enumerate(state.get("partial", []))]  # written before "index"
        if partial and not distributed.is_main():
            # Stopped inside a meta-step (alone) and resumed under torchrun: the games done and
            # their meta-gradient (in the learner's accumulators) are rank 0's alone, so that the
            # all-reduce counts them once; the others train what is left of their shares.
            state, partial = {**state, "learner": without_accumulated_tasks(state["learner"])}, []
        super().load_state_dict(state)
        self.partial = partial

    def init_state(self) -> dict[str, Tensor]:
        """The learned initialization: the encoder's tensors (the heads are per game)."""
        if self.learner is not None:
            self.learner.to(self.model)
        return {k: v.detach().clone() for k, v in self.model.state_dict().items() if k.startswith("encoder.")}


# ---------------------------------------------------------------------- evaluation
def evaluate_init(
    spec: EnvSpec,
    settings: A2CSettings,
    games: list[str],
    seeds: list[int],
    inits: dict[str, dict[str, Tensor] | None],
    device: str = "cpu",
    done: dict[str, Any] | None = None,
    on_run: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train an agent per (game, init, seed) and collect its episode returns.

    ``inits`` maps a label to an encoder initialization (None: a random encoder). Runs
    already present in ``done`` (same layout as the result) are kept, not repeated;
    ``on_run`` receives the result after each new run (to save progress).

    Returns ``{"runs": {game: {label: {str(seed): {"episode_steps", "episode_returns",
    "steps", "seconds"}}}}}``.
    """
    result: dict[str, Any] = {"runs": {}} if done is None else done
    for game in games:
        for seed in seeds:
            for label, init in inits.items():
                runs = result["runs"].setdefault(game, {}).setdefault(label, {})
                if str(seed) in runs:
                    continue
                start = time.perf_counter()
                curve = train_game(spec, game, settings, (seed, "rl-eval", game), device, init=init)
                runs[str(seed)] = {
                    "episode_steps": curve.episode_steps, "episode_returns": curve.episode_returns,
                    "steps": curve.steps, "seconds": time.perf_counter() - start,
                }
                if on_run is not None:
                    on_run(result)
    return result
