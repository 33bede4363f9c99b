"""Environments for the reinforcement-learning benchmarks (section 4.3, appendix F).

Two suites behind one batched interface, `VecEnv`:

- ``atari``: ALE games through gymnasium + ale-py (the ale-py wheel ships the ROMs, so
  nothing is downloaded). Preprocessing is done here rather than with gymnasium's
  ``AtariPreprocessing`` so that OpenCV is not a dependency: each agent step repeats the
  action for 4 emulator frames and keeps the pixel-wise maximum of the last two (flicker),
  an episode starts with 1 to 30 no-ops, and the batch of 210x160 RGB frames is resized
  to 84x84 RGB with OpenCV's INTER_AREA weights (`area_weights`) in two matrix products.
  Optional frame stacking. The same games can instead be stepped by envpool
  (``EnvSpec(backend="envpool")``, `EnvpoolVecEnv`), a C++ batch of ALEs with the same
  preprocessing.
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
ENV_BACKENDS = ("gymnasium", "envpool")
ATARI_RAW = (210, 160)  # an ALE screen, height x width
ATARI_FRAME = (84, 84)


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
    backend: str = "gymnasium"  # atari only: "gymnasium" (ale-py, stepped here) or "envpool"

    def __post_init__(self) -> None:
        if self.suite not in ("atari", "minatar"):
            raise ValueError(f"suite must be 'atari' or 'minatar', got {self.suite!r}")
        if self.backend not in ENV_BACKENDS:
            raise ValueError(f"backend must be one of {ENV_BACKENDS}, got {self.backend!r}")
        if self.backend == "envpool" and self.suite != "atari":
            raise ValueError("the envpool backend steps ALE games only (--benchmark atari)")
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
        self._taps: tuple | None = None  # the resize's, built on the first frames
        self._returns = np.zeros(self.num_envs)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)

    def _to_frames(self, raw: list[np.ndarray]) -> Tensor:
        batch = torch.from_numpy(np.stack(raw))
        if self.resize is None:
            return batch
        # (N, H0, W0, 3) -> (N, 3, H, W): columns, then rows, each output pixel the average of
        # the input pixels it covers, weighted by their overlap with it (OpenCV's INTER_AREA;
        # F.interpolate's "area" mode is adaptive average pooling, which differs at
        # non-integer ratios such as 210 -> 84). In units of 1 / W0 and 1 / H0 the weights are
        # integers, so the sums are exact in float32, and their ratio to H0 * W0 rounds
        # exactly in float64: ties to even, as OpenCV rounds (its float32 sums still differ
        # by one level on about 0.01-0.2% of pixels, measured against envpool).
        if self._taps is None:
            (h0, w0), (h, w) = batch.shape[1:3], self.resize
            self._taps = (area_taps(w0, w), area_taps(h0, h), h0 * w0)
        (col_index, col_weight), (row_index, row_weight), denominator = self._taps
        x = batch.permute(0, 3, 1, 2).float()
        cols = x.index_select(3, col_index[0]) * col_weight[0]
        for index, weight in zip(col_index[1:], col_weight[1:], strict=True):
            cols.addcmul_(x.index_select(3, index), weight)
        area = cols.index_select(2, row_index[0]) * row_weight[0][:, None]
        for index, weight in zip(row_index[1:], row_weight[1:], strict=True):
            area.addcmul_(cols.index_select(2, index), weight[:, None])
        return torch.round(area.double() / denominator).to(torch.uint8)

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


def area_weights(n_in: int, n_out: int) -> Tensor:
    """(n_out, n_in) float64 weights of a downscaling by area, OpenCV's INTER_AREA: output
    pixel i averages the input interval [i s, (i + 1) s), s = n_in / n_out, each input
    pixel weighted by the length of its overlap with it (rows sum to 1)."""
    if not 0 < n_out <= n_in:
        raise ValueError(f"area_weights downscales: need 0 < n_out <= n_in, got {n_out} and {n_in}")
    scale = n_in / n_out
    start = torch.arange(n_out, dtype=torch.float64)[:, None] * scale
    left = torch.arange(n_in, dtype=torch.float64)[None, :]
    overlap = (torch.minimum(start + scale, left + 1) - torch.maximum(start, left)).clamp_(min=0)
    return overlap / scale


def area_taps(n_in: int, n_out: int) -> tuple[Tensor, Tensor]:
    """`area_weights` as taps: ``index`` (taps, n_out) int64 and ``weight`` (taps, n_out)
    float32, the input pixels each output pixel covers and their weights in units of
    1 / n_in (integers; each output's weights sum to n_in). Unused taps have weight 0."""
    units = (area_weights(n_in, n_out) * n_in).round()
    taps = int((units > 0).sum(1).max())
    index = torch.zeros(taps, n_out, dtype=torch.int64)
    weight = torch.zeros(taps, n_out)
    for i in range(n_out):
        covered = units[i].nonzero().flatten()
        index[: len(covered), i] = covered
        weight[: len(covered), i] = units[i, covered].float()
    return index, weight


# ---------------------------------------------------------------------- envpool
class EnvpoolVecEnv:
    """The ALE games of ``make_vec_env`` stepped by envpool (a C++ batch of ALEs), with the
    interface and the episode semantics of `VecEnv`.

    envpool is told to preprocess as `AtariGame` and `VecEnv` do: 84x84 RGB frames resized
    with INTER_AREA, 4 emulator frames per step with the maximum of the last two, 1 to 30
    no-ops at the start of an episode, sticky actions (ALE v5's 0.25 unless given), no fire
    on reset, an episode ending at game over or after 27,000 steps (ALE v5's 108,000
    frames), rewards unclipped (the A2C loop clips). Unlike envpool's own auto-reset, which
    spends the next step on resetting, an environment whose episode ends is reset in the
    same step, and its observation is the first of the next episode, as in `VecEnv`.
    envpool takes one seed for the whole batch and seeds environment i with it plus i; the
    first of ``seeds`` (reduced below 2^31 - len(seeds)) is that seed, the others only
    count the environments. The emulators' random streams therefore differ from the
    gymnasium backend's, so results of a seed differ between the two backends.
    """

    def __init__(self, spec: EnvSpec, game: str, seeds: list[int], threads: int = 1, noop_max: int = 30) -> None:
        if spec.suite != "atari":
            raise ValueError("the envpool backend steps ALE games only")
        envpool = require_envpool()
        if not seeds:
            raise ValueError("EnvpoolVecEnv needs at least one seed")
        sticky = 0.25 if spec.sticky_action_prob is None else spec.sticky_action_prob
        self.env = envpool.make(
            f"{game}-v5", env_type="gymnasium", num_envs=len(seeds), seed=int(seeds[0]) % (2**31 - len(seeds)),
            num_threads=threads, gray_scale=False, stack_num=spec.frame_stack, frame_skip=4, noop_max=noop_max,
            repeat_action_probability=sticky, use_fire_reset=False, episodic_life=False, reward_clip=False,
            img_height=ATARI_FRAME[0], img_width=ATARI_FRAME[1], use_inter_area_resize=True,
            full_action_space=spec.action_set == "full", max_episode_steps=27_000,
        )
        self.name = game
        self.num_envs = len(seeds)
        self.num_actions = int(self.env.action_space.n)
        self.frame_stack = spec.frame_stack
        self.obs_shape = tuple(self.env.observation_space.shape)
        self.obs_scale = 1 / 255
        self._returns = np.zeros(self.num_envs)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)

    def reset(self) -> Tensor:
        obs, _ = self.env.reset()
        self._returns[:] = 0.0
        self._lengths[:] = 0
        return torch.from_numpy(np.ascontiguousarray(obs))

    def step(self, actions: np.ndarray) -> StepResult:
        obs, reward, terminated, truncated, _ = self.env.step(np.asarray(actions, dtype=np.int32))
        reward = np.asarray(reward, dtype=np.float32)
        done = np.logical_or(terminated, truncated)
        self._returns += reward
        self._lengths += 1
        episodes = []
        ended = np.flatnonzero(done)
        for i in ended:
            episodes.append((float(self._returns[i]), int(self._lengths[i])))
        if len(ended):
            obs = np.array(obs)
            fresh, _ = self.env.reset(ended.astype(np.int32))
            obs[ended] = fresh
            self._returns[ended] = 0.0
            self._lengths[ended] = 0
        return StepResult(torch.from_numpy(np.ascontiguousarray(obs)), reward, done, episodes)

    def close(self) -> None:
        close = getattr(self.env, "close", None)
        if callable(close):
            close()


def require_envpool():
    try:
        import envpool
    except ImportError as err:
        raise ImportError("the envpool backend needs the 'envpool' package: pip install -e '.[envpool]'") from err
    return envpool


def frame_shape(spec: EnvSpec) -> tuple[int, int, int]:
    """(C, H, W) of one preprocessed frame: the same for every game of a suite."""
    return (MINATAR_CHANNELS, 10, 10) if spec.suite == "minatar" else (3, *ATARI_FRAME)


def observation_channels(spec: EnvSpec) -> int:
    return frame_shape(spec)[0] * spec.frame_stack


def make_vec_env(spec: EnvSpec, game: str, seeds: list[int]) -> VecEnv | EnvpoolVecEnv:
    """One environment of ``game`` per seed, preprocessed as the suite prescribes."""
    if spec.backend == "envpool":
        return EnvpoolVecEnv(spec, game, seeds, threads=torch.get_num_threads())
    games = [make_game(spec, game, s) for s in seeds]
    if spec.suite == "minatar":
        return VecEnv(games, frame_shape(spec), spec.frame_stack, name=game)
    return VecEnv(games, frame_shape(spec), spec.frame_stack, resize=ATARI_FRAME, obs_scale=1 / 255, name=game)


def check_games(spec: EnvSpec, games: list[str]) -> None:
    """Raise ValueError naming any game the suite does not have (imports the suite)."""
    if spec.suite == "minatar":
        require_minatar()
        bad = [g for g in games if g not in MINATAR_GAMES]
    elif spec.backend == "envpool":
        known = set(require_envpool().list_all_envs())
        bad = [g for g in games if f"{g}-v5" not in known]
    else:
        gym = require_ale()
        bad = [g for g in games if f"ALE/{g}-v5" not in gym.registry]
    if bad:
        raise ValueError(f"unknown {spec.suite} game(s) {bad}")
