"""The ALE frames of --benchmark atari (appendix F's preprocessing), and the envpool backend
that must reproduce them."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from leap.cli import main
from leap.experiments.rl.envs import ATARI_FRAME, AtariGame, EnvSpec, VecEnv, area_weights, make_vec_env


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


HAVE_ALE = installed("ale_py") and installed("gymnasium")
HAVE_ENVPOOL = installed("envpool")
needs_ale = pytest.mark.skipif(not HAVE_ALE, reason="gymnasium/ale-py not installed (pip install -e '.[rl]')")
needs_envpool = pytest.mark.skipif(not (HAVE_ALE and HAVE_ENVPOOL),
                                   reason="envpool (and ale-py) not installed (pip install -e '.[rl,envpool]')")


class Still:
    """A game that always shows ``frame`` (H, W, 3)."""

    num_actions = 1

    def __init__(self, frame: np.ndarray | None = None) -> None:
        self.frame = frame

    def reset(self) -> np.ndarray:
        return self.frame


def test_area_weights_average_the_input_pixels_each_output_pixel_covers():
    # an integer ratio is mean pooling
    assert torch.equal(area_weights(4, 2), torch.tensor([[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]], dtype=torch.float64))
    # 5 -> 2: each output pixel covers 2.5 input pixels, the middle one half each
    expected = torch.tensor([[1, 1, 0.5, 0, 0], [0, 0, 0.5, 1, 1]], dtype=torch.float64) / 2.5
    assert torch.allclose(area_weights(5, 2), expected)
    weights = area_weights(210, 84)
    assert weights.shape == (84, 210) and torch.allclose(weights.sum(1), torch.ones(84, dtype=torch.float64))
    with pytest.raises(ValueError, match="downscales"):
        area_weights(84, 210)


def test_the_frame_resize_is_inter_area_not_adaptive_pooling():
    # One bright pixel in input row 2 of 5 lands half in each of 2 output rows (INTER_AREA);
    # adaptive average pooling would count it whole in both windows [0, 3) and [2, 5).
    raw = np.zeros((5, 4, 3), dtype=np.uint8)
    raw[2, :, :] = 250

    env = VecEnv([Still(raw)], (3, 2, 4), resize=(2, 4))
    frames = env.reset()
    assert frames.shape == (1, 3, 2, 4)
    assert torch.equal(frames[0, 0, :, 0], torch.tensor([50, 50], dtype=torch.uint8))  # 250 * 0.5 / 2.5


@needs_ale
def test_ale_frames_are_84x84_rgb_in_every_channel():
    env = make_vec_env(EnvSpec("atari"), "Breakout", [0])
    obs = env.reset()
    assert obs.shape == (1, 3, *ATARI_FRAME) and obs.dtype == torch.uint8


@needs_envpool
@pytest.mark.parametrize("game", ["Breakout", "SpaceInvaders"])
def test_envpool_starts_an_episode_on_the_same_frame_as_the_gymnasium_backend(game):
    # Without sticky actions and with exactly one no-op each, both backends show the same
    # first 84x84 RGB frame (same emulator, resize and channel order), up to one intensity
    # level on a few pixels where OpenCV's float32 sums round the other way.
    spec = EnvSpec("atari", sticky_action_prob=0.0)
    ours = VecEnv([AtariGame(game, 0, sticky_action_prob=0.0, noop_max=1)], (3, *ATARI_FRAME), resize=ATARI_FRAME)
    from leap.experiments.rl.envs import EnvpoolVecEnv

    pool = EnvpoolVecEnv(spec, game, [0], noop_max=1)
    assert pool.obs_shape == (3, *ATARI_FRAME) and pool.num_actions == ours.num_actions
    diff = (pool.reset().int() - ours.reset().int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3


@needs_envpool
def test_our_resize_matches_envpools_on_the_frames_of_a_trajectory():
    # Two envpools with the same seed and actions step the same emulation; one returns the
    # raw max-pooled 210x160 frames, the other envpool's own 84x84 resize of them.
    import envpool

    def pool(height, width):
        return envpool.make("SpaceInvaders-v5", env_type="gymnasium", num_envs=2, seed=3, gray_scale=False,
                            stack_num=1, repeat_action_probability=0.25, use_fire_reset=False, img_height=height,
                            img_width=width)

    raw_env, small_env = pool(210, 160), pool(*ATARI_FRAME)
    resize = VecEnv([Still()], (3, *ATARI_FRAME), resize=ATARI_FRAME)
    raw, _ = raw_env.reset()
    small, _ = small_env.reset()
    rng = np.random.default_rng(0)
    for _ in range(50):
        ours = resize._to_frames(list(raw.transpose(0, 2, 3, 1)))
        diff = (ours.int() - torch.from_numpy(small).int()).abs()
        # float rounding of exact halves may differ by one level on a few pixels
        assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3
        actions = rng.integers(small_env.action_space.n, size=2)
        raw = raw_env.step(actions)[0]
        small = small_env.step(actions)[0]


@needs_envpool
def test_envpool_resets_an_ended_episode_in_the_same_step_and_reports_its_raw_return():
    from leap.experiments.rl.envs import EnvpoolVecEnv

    env = make_vec_env(EnvSpec("atari", backend="envpool"), "Breakout", [5, 6])
    assert isinstance(env, EnvpoolVecEnv)
    env.reset()
    rng = np.random.default_rng(0)
    steps, episodes = 0, []
    while len(episodes) < 3 and steps < 5_000:
        result = env.step(rng.integers(env.num_actions, size=2))
        steps += 1
        episodes += result.episodes
        assert len(result.episodes) == int(result.done.sum())
        for i in np.flatnonzero(result.done):
            # the observation is the new episode's first frame, repeated by no step yet
            assert env._lengths[i] == 0
    assert len(episodes) >= 3
    assert all(length >= 1 and ret >= 0 for ret, length in episodes)
    assert sum(length for _, length in episodes) <= 2 * steps


def test_the_envpool_backend_is_for_ale_games_only(tmp_path, capsys):
    with pytest.raises(ValueError, match="ALE games only"):
        EnvSpec("minatar", backend="envpool")
    out = tmp_path / "run"
    assert main(["train", "--benchmark", "minatar", "--env-backend", "envpool", "--out", str(out)]) == 2
    assert "ALE games only" in capsys.readouterr().err and not out.exists()
