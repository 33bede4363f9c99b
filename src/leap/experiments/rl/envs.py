"""Environments for the reinforcement-learning benchmarks (section 4.3, appendix F).

Two suites behind one batched interface, `VecEnv`:

- ``atari``: ALE games through gymnasium + ale-py (the ale-py wheel ships the ROMs, so
  nothing is downloaded). Preprocessing is done here rather than with gymnasium's
  ``AtariPreprocessing`` so that OpenCV is not a dependency: each agent step repeats the
  action for 4 emulator frames and keeps the pixel-wise maximum of the last two (flicker),
  an episode starts with up to 30 no-ops, and the batch of 210x160 RGB frames is resized
  to 84x84 RGB (area interpolation) in one torch call. Optional frame stacking.
- ``minatar``: the five MinAtar games (10x10 grids, 4 to 10 binary channels). Channels are
  zero-padded to 10 so that one encoder reads every game.

Environments are stepped in a plain loop (synchronous, one process): with the few cores
these runs get, worker processes would only add copying. Episodes are reset on the step
that ends them (the returned observation is then the first of the next episode), and the
raw (unclipped) return of each finished episode is reported for the learning curves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# The games are declared without torch in leap.experiments.rl.games (the benchmarks'
# defaults); they are still read from here.
from leap.experiments.rl.games import (  # noqa: F401
    ATARI_EVAL,
    ATARI_HELD_OUT,
    ATARI_POOL,
    MINATAR_GAMES,
    MINATAR_HELD_OUT,
    MINATAR_POOL,
)
from leap.util.checks import positive_int

MINATAR_CHANNELS = 10  # seaquest has the most channels; the others are zero-padded to it


class Game(Protocol):
    """One environment instance with its own random stream."""

    num_actions: int

    def reset(self) -> np.ndarray:
        """Start an episode; returns the first observation."""
        ...

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        """Take ``action``; returns (observation, reward, episode over)."""
        ...


@dataclass(frozen=True)
class EnvSpec:
    """How a suite's games are built (everything but the game and the seed)."""

    suite: str  # "atari" or "minatar"
    frame_stack: int = 1
    action_set: str = "minimal"  # "minimal" or "full" (MinAtar: 6 actions for every game)
    sticky_action_prob: float | None = None  # None: the suite's default (ALE v5 0.25, MinAtar 0.1)

    def __post_init__(self) -> None:
        if self.suite not in ("atari", "minatar"):
            raise ValueError(f"suite must be 'atari' or 'minatar', got {self.suite!r}")
        positive_int("frame_stack", self.frame_stack)
        if self.action_set not in ("minimal", "full"):
            raise ValueError(f"action_set must be 'minimal' or 'full', got {self.action_set!r}")
        if self.sticky_action_prob is not None and not 0.0 <= self.sticky_action_prob < 1.0:
            raise ValueError(f"sticky_action_prob must be in [0, 1), got {self.sticky_action_prob!r}")


# ---------------------------------------------------------------------- MinAtar
class MinAtarGame:
    """A MinAtar game, observations (channels, 10, 10) uint8 with zero-padded channels."""

    def __init__(self, name: str, seed: int, action_set: str = "minimal", sticky_action_prob: float | None = None,
                 channels: int = MINATAR_CHANNELS) -> None:
        minatar = require_minatar()
        if name not in MINATAR_GAMES:
            raise ValueError(f"unknown MinAtar game {name!r}; choose from {list(MINATAR_GAMES)}")
        prob = 0.1 if sticky_action_prob is None else sticky_action_prob
        self.env = minatar.Environment(name, sticky_action_prob=prob)
        self.env.seed(seed % (2**32))
        self.actions = list(self.env.minimal_action_set()) if action_set == "minimal" else list(range(6))
        self.num_actions = len(self.actions)
        own = self.env.state_shape()[2]
        if own > channels:
            raise ValueError(f"MinAtar {name} has {own} channels, more than {channels}")
        self._obs = np.zeros((channels, 10, 10), dtype=np.uint8)
        self._own = own

    def _observe(self) -> np.ndarray:
        self._obs[: self._own] = self.env.state().transpose(2, 0, 1)
        return self._obs.copy()

    def reset(self) -> np.ndarray:
        self.env.reset()
        return self._observe()

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        reward, terminal = self.env.act(self.actions[action])
        return self._observe(), float(reward), bool(terminal)


# ---------------------------------------------------------------------- ALE
class AtariGame:
    """An ALE game: raw 210x160x3 observations, 4-frame action repeat with max-pooling of
    the last two frames, up to ``noop_max`` no-ops at the start of each episode.

    Resizing to 84x84 happens in `VecEnv` (batched). Episodes end at game over
    (not at a lost life) or at ALE v5's cap of 108,000 emulator frames.
    """

    def __init__(self, name: str, seed: int, action_set: str = "minimal", sticky_action_prob: float | None = None,
                 frame_skip: int = 4, noop_max: int = 30) -> None:
        gym = require_ale()
        env_id = f"ALE/{name}-v5"
        if env_id not in gym.registry:
            raise ValueError(f"unknown ALE game {name!r} (no {env_id} in gymnasium's registry)")
        prob = 0.25 if sticky_action_prob is None else sticky_action_prob
        self.env = gym.make(env_id, frameskip=1, repeat_action_probability=prob,
                            full_action_space=action_set == "full")
        self.num_actions = int(self.env.action_space.n)
        self.frame_skip = frame_skip
        self.noop_max = noop_max
        self._rng = np.random.default_rng(seed)
        self._seed: int | None = seed % (2**31)  # gymnasium seeds the emulator on the first reset only

    def reset(self) -> np.ndarray:
        obs, _ = self.env.reset(seed=self._seed)
        self._seed = None
        for _ in range(int(self._rng.integers(1, self.noop_max + 1)) if self.noop_max else 0):
            obs, _, terminated, truncated, _ = self.env.step(0)  # action 0 is NOOP in every ALE action set
            if terminated or truncated:
                obs, _ = self.env.reset()
        return obs

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        total = 0.0
        last = prev = None
        done = False
        for _ in range(self.frame_skip):
            obs, reward, terminated, truncated, _ = self.env.step(action)
            total += float(reward)
            prev, last = last, obs
            if terminated or truncated:
                done = True
                break
        frame = last if prev is None else np.maximum(prev, last)
        return frame, total, done


def require_minatar():
    try:
        import minatar
    except ImportError as err:  # the rl extra is optional
        raise ImportError("the minatar benchmark needs the 'minatar' package: pip install -e '.[rl]'") from err
    return minatar


def require_ale():
    try:
        import ale_py
        import gymnasium
    except ImportError as err:
        raise ImportError("the atari benchmark needs 'gymnasium' and 'ale-py': pip install -e '.[rl]'") from err
    gymnasium.register_envs(ale_py)
    return gymnasium


def make_game(spec: EnvSpec, name: str, seed: int) -> Game:
    if spec.suite == "minatar":
        return MinAtarGame(name, seed, spec.action_set, spec.sticky_action_prob)
    return AtariGame(name, seed, spec.action_set, spec.sticky_action_prob)


# ---------------------------------------------------------------------- batching
@dataclass
class StepResult:
    """One synchronous step of every environment.

    ``obs`` (N, C, H, W) uint8 is the observation to act on next (the first observation
    of a new episode where ``done``); ``reward`` and ``done`` are (N,) numpy arrays;
    ``episodes`` lists (return, length) of the episodes that ended in this step.
    """

    obs: Tensor
    reward: np.ndarray
    done: np.ndarray
    episodes: list[tuple[float, int]]


class VecEnv:
    """``num_envs`` games stepped together, with auto-reset, batched resizing (ALE) and
    frame stacking. Observations are uint8 tensors (N, C, H, W); multiply by
    ``obs_scale`` for the network's [0, 1] input.

    Args:
        games: the environment instances (one game, independent seeds).
        frame_shape: (C, H, W) of one frame after resizing.
        frame_stack: frames per observation (stacked along channels).
        resize: (H, W) to resize raw (H0, W0, C) frames to, or None if games already
            return (C, H, W) frames.
        obs_scale: factor mapping the uint8 observation to the network's input range.
    """

    def __init__(self, games: list[Game], frame_shape: tuple[int, int, int], frame_stack: int = 1,
                 resize: tuple[int, int] | None = None, obs_scale: float = 1.0, name: str = "") -> None:
        if not games:
            raise ValueError("VecEnv needs at least one game")
        self.envs = games
        self.name = name
        self.num_envs = len(games)
        self.num_actions = games[0].num_actions
        self.frame_stack = frame_stack
        self.resize = resize
        self.obs_scale = obs_scale
        self.obs_shape = (frame_shape[0] * frame_stack, frame_shape[1], frame_shape[2])
        self._frames = torch.zeros((self.num_envs, *self.obs_shape), dtype=torch.uint8)
        self._returns = np.zeros(self.num_envs)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)

    def _to_frames(self, raw: list[np.ndarray]) -> Tensor:
        batch = torch.from_numpy(np.stack(raw))
        if self.resize is None:
            return batch
        # (N, 210, 160, 3) -> (N, 3, 84, 84); area interpolation averages the pixels each
        # output pixel covers, as OpenCV's INTER_AREA does.
        x = batch.permute(0, 3, 1, 2).float()
        return F.interpolate(x, size=self.resize, mode="area").round_().to(torch.uint8)

    def _push(self, frames: Tensor, fresh: np.ndarray) -> Tensor:
        """Shift the newest frames into the stack; environments starting an episode get
        their first frame repeated over the whole stack."""
        c = frames.shape[1]
        if self.frame_stack > 1:
            self._frames[:, :-c] = self._frames[:, c:].clone()
        self._frames[:, -c:] = frames
        for i in np.flatnonzero(fresh):
            self._frames[i] = frames[i].repeat(self.frame_stack, 1, 1)
        return self._frames.clone()

    def reset(self) -> Tensor:
        frames = self._to_frames([env.reset() for env in self.envs])
        self._returns[:] = 0.0
        self._lengths[:] = 0
        return self._push(frames, np.ones(self.num_envs, dtype=bool))

    def step(self, actions: np.ndarray) -> StepResult:
        raw, rewards, dones, episodes = [], np.zeros(self.num_envs, dtype=np.float32), np.zeros(self.num_envs, bool), []
        for i, (env, action) in enumerate(zip(self.envs, actions.tolist(), strict=True)):
            obs, reward, done = env.step(int(action))
            rewards[i] = reward
            self._returns[i] += reward
            self._lengths[i] += 1
            if done:
                dones[i] = True
                episodes.append((float(self._returns[i]), int(self._lengths[i])))
                self._returns[i] = 0.0
                self._lengths[i] = 0
                obs = env.reset()
            raw.append(obs)
        return StepResult(self._push(self._to_frames(raw), dones), rewards, dones, episodes)

    def close(self) -> None:
        for env in self.envs:
            close = getattr(getattr(env, "env", None), "close", None)
            if callable(close):
                close()


def frame_shape(spec: EnvSpec) -> tuple[int, int, int]:
    """(C, H, W) of one preprocessed frame: the same for every game of a suite."""
    return (MINATAR_CHANNELS, 10, 10) if spec.suite == "minatar" else (3, 84, 84)


def observation_channels(spec: EnvSpec) -> int:
    return frame_shape(spec)[0] * spec.frame_stack


def make_vec_env(spec: EnvSpec, game: str, seeds: list[int]) -> VecEnv:
    """One environment of ``game`` per seed, preprocessed as the suite prescribes."""
    games = [make_game(spec, game, s) for s in seeds]
    if spec.suite == "minatar":
        return VecEnv(games, frame_shape(spec), spec.frame_stack, name=game)
    return VecEnv(games, frame_shape(spec), spec.frame_stack, resize=(84, 84), obs_scale=1 / 255, name=game)


def check_games(spec: EnvSpec, games: list[str]) -> None:
    """Raise ValueError naming any game the suite does not have (imports the suite)."""
    if spec.suite == "minatar":
        require_minatar()
        bad = [g for g in games if g not in MINATAR_GAMES]
    else:
        gym = require_ale()
        bad = [g for g in games if f"ALE/{g}-v5" not in gym.registry]
    if bad:
        raise ValueError(f"unknown {spec.suite} game(s) {bad}")
