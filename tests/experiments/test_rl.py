"""Reinforcement learning (section 4.3, appendix F): the A2C agent, the Leap hook on its
updates, RL meta-training runs, paired evaluation, and smoke runs on MinAtar and ALE."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import leap
from helpers.torchrun import LIMIT_S, assert_same_records, fault_env, finish, launch, max_abs_diff, records, torchrun
from leap.cli import main
from leap.experiments.config import RunConfig
from leap.experiments.rl.a2c import A2CSettings, AgentCurve, train_agent
from leap.experiments.rl.agent import ActorCritic, encoder_only, make_agent
from leap.experiments.rl.envs import EnvSpec, VecEnv, make_vec_env
from leap.experiments.rl.report import curve_on_grid, write_rl_report


def installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: a module entry blocked with None
        return False


HAVE_MINATAR = installed("minatar")
HAVE_ALE = installed("ale_py") and installed("gymnasium")
needs_minatar = pytest.mark.skipif(not HAVE_MINATAR, reason="minatar not installed (pip install -e '.[rl]')")
needs_ale = pytest.mark.skipif(not HAVE_ALE, reason="gymnasium/ale-py not installed (pip install -e '.[rl]')")

# Small enough for seconds on a shared CPU: 8 environments, 2 updates per game.
TINY = ["--meta-batch", "1", "--task-steps", "80", "--task-batch", "8", "--unroll", "5", "--eval-steps", "80",
        "--eval-batch", "8", "--no-progress"]


@pytest.fixture(autouse=True)
def _one_thread():
    # The agents are tiny; intra-op threads only contend on a shared CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ContextualBandit:
    """One-step episodes; the observation shows which of two arms pays 1 (the other 0).
    A random policy earns 0.5 per episode, a policy that reads the observation earns 1."""

    num_actions = 2

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.arm = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros((2, 1, 1), dtype=np.uint8)
        obs[self.arm] = 1
        return obs

    def reset(self) -> np.ndarray:
        self.arm = int(self.rng.integers(2))
        return self._obs()

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        return self._obs(), float(action == self.arm), True


def bandit_env(num_envs: int = 8) -> VecEnv:
    return VecEnv([ContextualBandit(i) for i in range(num_envs)], (2, 1, 1), name="bandit")


def bandit_agent() -> ActorCritic:
    return ActorCritic(nn.Sequential(nn.Flatten(), nn.Linear(2, 16), nn.ReLU()), 16, 2)


def test_a2c_agent_learns_to_read_the_observation_in_a_contextual_bandit():
    env = bandit_env()
    settings = A2CSettings(steps=2000, num_envs=8, unroll=5, lr=1e-2)
    curve = train_agent(bandit_agent(), env, settings, torch.Generator().manual_seed(0))
    first = float(np.mean(curve.episode_returns[:80]))  # the first two updates' episodes
    last = float(np.mean(curve.episode_returns[-200:]))
    assert curve.steps == settings.updates * settings.steps_per_update == 2000
    assert first < 0.7  # starts near the random policy's 0.5
    assert last > 0.9


def test_the_loss_from_the_acting_passes_is_the_loss_of_a_second_forward_pass_and_so_is_its_gradient():
    # One forward pass per observation: the loss reuses the acting passes' logits and
    # values, which equal a fresh forward over the rollout at the same parameters.
    from leap.experiments.rl.a2c import a2c_loss, collect

    torch.manual_seed(0)
    model, env = bandit_agent(), bandit_env()
    settings = A2CSettings(steps=40, num_envs=8, unroll=5, lr=1e-2)
    curve = AgentCurve("bandit", 0, 0, torch.zeros(1))
    rollout, _ = collect(model, env, env.reset(), settings, torch.Generator().manual_seed(0), curve)
    assert rollout.logits.shape == (40, 2) and rollout.values.shape == (40,) and rollout.logits.requires_grad
    grads = []
    for rescore in (False, True):
        model.zero_grad()
        loss = a2c_loss(model, rollout, settings, rescore=rescore)
        loss.backward(retain_graph=True)
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (reused, g_reused), (fresh, g_fresh) = grads
    assert torch.allclose(reused, fresh, rtol=1e-6, atol=1e-7)
    for a, b in zip(g_reused, g_fresh, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


class CountingLeap(leap.Leap):
    """Leap that records what it sees at each hook call."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.points: list[list[torch.Tensor]] = []
        self.grads_seen: list[bool] = []
        self.end_losses: list[torch.Tensor | None] = []

    def update(self, loss, model):
        params = self.params_of(model)
        self.points.append([p.detach().clone() for p in params])
        self.grads_seen.append(all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params))
        super().update(loss, model)

    def end_task(self, model=None, loss=None):
        self.end_losses.append(loss)
        super().end_task(model, loss)


def test_leap_hook_sees_every_agent_update_between_backward_and_step():
    model = bandit_agent()
    learner = CountingLeap(model, metric="energy", params=encoder_only)
    settings = A2CSettings(steps=400, num_envs=8, unroll=5, lr=1e-2)
    learner.init_task()
    learner.to(model)
    curve = train_agent(model, bandit_env(), settings, torch.Generator().manual_seed(0), learner)
    assert len(learner.points) == curve.updates == settings.updates == 10
    assert all(learner.grads_seen)  # after backward
    # before the step: each call sees the parameters the previous step produced, and the
    # last step comes after the last call
    for before, after in zip(learner.points, learner.points[1:]):
        assert any(not torch.equal(a, b) for a, b in zip(before, after))
    final = [p.detach() for p in learner.params_of(model)]
    assert any(not torch.equal(a, b) for a, b in zip(learner.points[-1], final))
    # the last segment is closed with f(θ_K)
    assert len(learner.end_losses) == 1 and learner.end_losses[0] is not None
    assert int(learner.normalize()) == 1
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in learner.parameters())


def test_an_agent_whose_parameters_overflowed_plays_its_game_out_and_is_left_out_of_the_meta_gradient():
    # A θ0 far too large (finite, but the forward pass overflows) must not crash the game
    # (torch.multinomial refuses NaN probabilities): the game runs to its end with a NaN
    # loss, and the hook leaves the task out, so the loop counts it as a failed task.
    model = bandit_agent()
    learner = leap.Leap(model, metric="energy", params=encoder_only)
    with torch.no_grad():
        for p in learner.parameters():
            p.fill_(1e38)
    settings = A2CSettings(steps=400, num_envs=8, unroll=5, lr=1e-2)
    learner.init_task()
    learner.to(model)
    curve = train_agent(model, bandit_env(), settings, torch.Generator().manual_seed(0), learner)
    assert curve.updates == settings.updates and curve.steps == 400
    assert not bool(torch.isfinite(curve.losses).any())
    assert int(learner.normalize()) == 0


def test_the_meta_learned_parameters_are_the_encoder_not_the_heads():
    model = make_agent("minatar", 10, 4)
    learner = leap.Leap(model, metric="energy", params=encoder_only)
    assert learner.param_names and all(n.startswith("encoder.") for n in learner.param_names)
    assert {n for n, _ in model.named_parameters() if not n.startswith("encoder.")} == {
        "policy.weight", "policy.bias", "value.weight", "value.bias"}


def test_mnih_encoder_reads_84x84_rgb_and_minatar_encoder_reads_10x10_grids():
    logits, value = make_agent("atari", 3, 18)(torch.rand(2, 3, 84, 84))
    assert logits.shape == (2, 18) and value.shape == (2,)
    logits, value = make_agent("minatar", 10, 3)(torch.rand(5, 10, 10, 10))
    assert logits.shape == (5, 3) and value.shape == (5,)


def test_rl_benchmarks_default_to_appendix_f_and_the_energy_metric():
    cfg = RunConfig(benchmark="atari").resolved()
    assert (cfg.meta_steps, cfg.meta_batch, cfg.task_steps, cfg.task_batch) == (100, 16, 5_000_000, 32)
    assert (cfg.inner_optimizer, cfg.inner_lr, cfg.metric) == ("rmsprop", 1e-4, "energy")
    assert cfg.extra["unroll"] == 5 and cfg.extra["entropy_cost"] == 0.01 and cfg.extra["reward_clip"] == 5.0
    assert "Breakout" not in cfg.extra["games"] and "SpaceInvaders" not in cfg.extra["games"]
    assert cfg.pretrain_tasks == len(cfg.extra["games"])
    # minatar evaluates on both held-out games and, as Table 6 does, on one pretraining game
    minatar = RunConfig(benchmark="minatar").resolved()
    held_out = set(minatar.extra["eval_games"]) - set(minatar.extra["games"])
    assert held_out == {"breakout", "space_invaders"} and len(minatar.extra["eval_games"]) == 3
    # the supervised benchmarks keep their defaults
    builtin = RunConfig().resolved()
    assert (builtin.inner_optimizer, builtin.metric) == ("sgd", "length")


@pytest.mark.parametrize("argv,message", [
    (["--benchmark", "minatar", "--method", "fomaml"], "not available"),
    (["--benchmark", "minatar", "--games", "pong"], "unknown MinAtar game"),
    (["--benchmark", "minatar", "--val-every", "2"], "--val-every does not apply to --benchmark minatar"),
    (["--benchmark", "minatar", "--pretrain-tasks", "4"], "pool has 3"),
    (["--benchmark", "builtin", "--unroll", "5"], "--unroll"),
    (["--benchmark", "minatar", "--unroll", "0"], "unroll"),
])
def test_bad_rl_options_exit_2_before_any_output(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_curve_is_the_mean_return_of_the_last_window_episodes():
    steps, returns = [10, 20, 30, 40], [1.0, 2.0, 3.0, 6.0]
    curve = curve_on_grid(steps, returns, np.array([5, 10, 25, 40, 100]), window=2)
    assert np.isnan(curve[0])
    assert curve[1:].tolist() == [1.0, 1.5, 4.5, 4.5]


def test_rl_report_draws_one_figure_and_a_table_per_result(tmp_path):
    run = {"episode_steps": [10, 20, 30], "episode_returns": [0.0, 1.0, 2.0], "steps": 40, "seconds": 0.1}
    result = {"benchmark": "minatar", "runs": {g: {"leap": {"0": run, "1": run}, "random": {"0": run}}
                                               for g in ("breakout", "space_invaders")}}
    (tmp_path / "rl-eval.json").write_text(json.dumps(result))
    summary, png, md = write_rl_report(tmp_path)
    assert png.stat().st_size > 0 and summary.name == "rl-summary.json"
    table = md.read_text()
    assert "| breakout | Leap | 2 | 1.00 ± 0.00 (n=2) |" in table and "| space_invaders | Random init | 1 |" in table
    # seed 0 is shared with the random init: one paired seed, no interval, no verdict
    assert "| breakout | Leap - Random init | 0.00 (n=1) | 0.00 (n=1) | cannot be told from 1 seed |" in table


def test_rl_report_reads_faster_slower_or_indistinguishable_off_the_paired_interval(tmp_path):
    def run(returns):
        return {"episode_steps": list(range(1, len(returns) + 1)), "episode_returns": returns, "steps": 10,
                "seconds": 0.1}

    random = {str(s): run([1.0, 1.0 + s]) for s in range(3)}
    faster = {str(s): run([2.0, 2.0 + s + 0.1 * s]) for s in range(3)}
    same = {str(s): run([1.0 + (-1) ** s * 0.5, 1.0 + s]) for s in range(3)}
    result = {"benchmark": "minatar", "runs": {"asterix": {"leap": faster, "random": random},
                                               "freeway": {"leap": same, "random": random},
                                               "seaquest": {"leap": random, "random": faster}},
              "pool": ["seaquest"]}
    (tmp_path / "rl-eval.json").write_text(json.dumps(result))
    table = write_rl_report(tmp_path)[-1].read_text()
    assert "| asterix | Leap - Random init |" in table and "faster (the interval lies above 0) |" in table
    assert "| seaquest (pretraining game) | Leap - Random init |" in table  # Table 6 marks games seen in training
    assert "indistinguishable (the interval contains 0) |" in table and "slower (the interval lies below 0) |" in table


def test_rl_report_compares_the_spread_over_seeds_of_each_initialization_with_the_random_one(tmp_path):
    # the paper credits Leap's gain to "less volatile exploration": the ratio of standard
    # deviations over paired seeds, with its interval, says whether the learned init's spread is smaller
    def run(value):
        return {"episode_steps": [1, 2], "episode_returns": [value, value], "steps": 10, "seconds": 0.1}

    seeds = range(40)
    random = {str(s): run(float(s % 10)) for s in seeds}
    calm = {str(s): run(5.0 + 0.1 * (s % 10)) for s in seeds}
    result = {"benchmark": "minatar", "runs": {"breakout": {"leap": calm, "random": random},
                                               "asterix": {"leap": random, "random": random}}}
    (tmp_path / "rl-eval.json").write_text(json.dumps(result))
    table = write_rl_report(tmp_path)[-1].read_text()
    assert "| breakout | Leap / Random init | 0.10 [" in table and "smaller (the interval lies below 1) |" in table
    assert "| asterix | Leap / Random init | 1.00 [" in table
    assert "indistinguishable (the interval contains 1) |" in table


def test_the_rl_report_is_redrawn_the_same_from_its_small_summary_alone(tmp_path):
    # rl-eval.json holds every episode of every agent (tens of MB for Figure 4's protocol);
    # results/ keeps rl-summary.json, from which leap report draws the same table
    def run(seed):
        returns = [float((seed * 7 + i) % 5) for i in range(300)]
        return {"episode_steps": [10 * (i + 1) for i in range(300)], "episode_returns": returns, "steps": 3000,
                "seconds": 0.1}

    result = {"benchmark": "minatar", "pool": ["asterix"],
              "runs": {g: {"leap": {str(s): run(s) for s in range(3)}, "random": {str(s): run(s + 1) for s in range(3)}}
                       for g in ("breakout", "asterix")}}
    full, alone = tmp_path / "full", tmp_path / "alone"
    full.mkdir(), alone.mkdir()
    (full / "rl-eval.json").write_text(json.dumps(result))
    write_rl_report(full)
    (alone / "rl-summary.json").write_bytes((full / "rl-summary.json").read_bytes())
    assert main(["report", str(alone)]) == 0
    assert (alone / "rl-eval.md").read_text() == (full / "rl-eval.md").read_text()
    assert (alone / "rl-curves.png").stat().st_size > 0
    # its size grows with the seeds, not with the episodes: 200 grid points per agent
    summary = json.loads((full / "rl-summary.json").read_text())
    assert all(len(v["curve"]) == 200 for g in summary["games"].values() for by in g["labels"].values()
               for v in by.values())


def test_the_rl_report_of_a_run_directory_tabulates_its_meta_training_with_the_games_in_one_order(tmp_path):
    run = {"episode_steps": [10, 20, 30], "episode_returns": [0.0, 1.0, 2.0], "steps": 40, "seconds": 0.1}
    (tmp_path / "rl-eval.json").write_text(json.dumps(
        {"benchmark": "minatar", "runs": {"breakout": {"leap": {"0": run}, "random": {"0": run}}}}))
    records = [
        {"step": 1, "games": ["asterix", "freeway"], "game_returns": [13.5, 57.8], "game_paths": [447.8, 105.1],
         "train_path": 276.45, "meta_step_norm": 0.3151},
        {"step": 2, "games": ["freeway", "seaquest"], "game_returns": [float("nan"), 6.0], "game_paths": [1.5, 362.3],
         "train_path": 181.9, "meta_step_norm": 0.1},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    table = write_rl_report(tmp_path)[-1].read_text()
    assert "| meta-step | late return asterix / freeway / seaquest | path energy asterix / freeway / seaquest" in table
    assert "| 1 | 13.50 / 57.80 / - | 447.8 / 105.1 / - (276.4) | 0.315 |" in table
    assert "| 2 | - / - / 6.00 | - / 1.5 / 362.3 (181.9) | 0.100 |" in table  # NaN: freeway finished no episode
    # an evaluation written elsewhere (no metrics.jsonl beside it) has no such section
    (tmp_path / "metrics.jsonl").unlink()
    assert "Meta-training" not in write_rl_report(tmp_path)[-1].read_text()


def test_leap_report_draws_the_rl_figure_of_an_rl_eval_directory(tmp_path):
    run = {"episode_steps": [10, 20, 30], "episode_returns": [0.0, 1.0, 2.0], "steps": 40, "seconds": 0.1}
    result = {"benchmark": "minatar", "runs": {"breakout": {"leap": {"0": run}, "random": {"0": run}}}}
    (tmp_path / "rl-eval.json").write_text(json.dumps(result))
    assert main(["report", str(tmp_path)]) == 0
    assert (tmp_path / "rl-curves.png").is_file() and (tmp_path / "rl-eval.md").is_file()


def evaluation(labels: dict[str, float], seeds=range(4), steps: int = 40, settings: str = "a",
               device: str = "cpu") -> dict:
    """An rl-eval result: per game and label, seeds whose returns rise by label's offset."""
    def run(seed, offset):
        return {"episode_steps": [10, 20, 30], "episode_returns": [offset + seed, offset + 2 * seed, 1.0],
                "steps": steps, "seconds": 0.1 * seed}

    return {"benchmark": "minatar", "settings": {"name": settings}, "spec": {"game": "x"}, "pool": ["asterix"],
            "labels": list(labels), "seeds": list(seeds), "device": device,
            "runs": {g: {label: {str(s): run(s, offset) for s in seeds} for label, offset in labels.items()}
                     for g in ("breakout", "asterix")}}


def write_evaluation(directory, result) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rl-eval.json").write_text(json.dumps(result))
    return str(directory)


def test_rl_join_puts_two_runs_learned_encoders_beside_one_random_arm_with_every_paired_difference(tmp_path, capsys):
    # Leap's run evaluated against the random encoder, Reptile's alone (--no-baseline): one table
    leap_run = write_evaluation(tmp_path / "leap", evaluation({"leap": 2.0, "random": 0.0}))
    reptile_run = write_evaluation(tmp_path / "reptile", evaluation({"reptile": 1.0}))
    out = tmp_path / "arms"
    assert main(["rl-join", f"{leap_run},{reptile_run}", "--out", str(out), "--no-progress"]) == 0
    table = (out / "rl-eval.md").read_text()
    rows = [line.split(" | ")[:2] for line in table.splitlines() if line.startswith("| breakout | ")]
    # the learned initializations first, in the sources' order, then the random one
    assert [r[1] for r in rows[:3]] == ["Leap", "Reptile", "Random init"]
    for pair in ("Leap - Random init", "Reptile - Random init", "Leap - Reptile"):
        assert f"| breakout | {pair} | " in table and f"| asterix (pretraining game) | {pair} | " in table
    assert "| breakout | Leap - Reptile | 0.67 ± 0.00 (n=4) |" in table  # (2 - 1) x 2 of 3 episodes
    assert "| breakout | Reptile / Random init |" in table and "| breakout | Leap / Reptile |" not in table
    summary = json.loads((out / "rl-summary.json").read_text())
    assert [s["labels"] for s in summary["sources"]] == [["leap", "random"], ["reptile"]]
    # leap report redraws the joined table from the joined summary alone (as under results/)
    (out / "rl-eval.md").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "rl-eval.md").read_text() == table and (out / "rl-curves.png").stat().st_size > 0


@pytest.mark.parametrize("case,message", [
    ("other settings", "differ in settings"),
    ("other steps", "different numbers of steps"),
    ("two leap encoders", "both hold 'leap'"),
    ("leap on one game each", "both hold 'leap'"),
    ("another random encoder", "the random initialization's agents differ"),
    ("other seeds", "evaluate the same seeds"),
    ("an evaluation still running", "an incomplete evaluation (breakout/reptile lacks seeds ['3'])"),
    ("a damaged runs record", "a damaged rl-eval record"),
    ("another device", "on different devices"),
    ("the same source twice", "at least two"),
    ("out is a run", "holds rl-eval.json"),
    ("out holds a run's metrics", "holds metrics.jsonl"),
    ("out is a file", "exists and is not a directory"),
    ("out is a source", "a source's own directory"),
    ("one source", "at least two"),
    ("damaged source", "not a readable JSON record"),
])
def test_rl_join_refuses_results_that_are_not_one_comparison_with_one_line_and_writes_nothing(
        tmp_path, capsys, case, message):
    leap_run = write_evaluation(tmp_path / "leap", evaluation({"leap": 2.0, "random": 0.0}))
    other = {"other settings": evaluation({"reptile": 1.0}, settings="b"),
             "other steps": evaluation({"reptile": 1.0}, steps=80),
             "two leap encoders": evaluation({"leap": 1.0}),
             "another random encoder": evaluation({"reptile": 1.0, "random": 0.5}),
             "other seeds": evaluation({"reptile": 1.0}, seeds=range(10, 14)),
             "another device": evaluation({"reptile": 1.0}, device="cuda")}.get(case, evaluation({"reptile": 1.0}))
    if case == "leap on one game each":  # a second Leap run's encoder, on the game the first lacks
        other = evaluation({"leap": 1.0, "random": 0.0})
        del other["runs"]["asterix"]["leap"]
        other["labels"] = ["random"]
    elif case == "an evaluation still running":
        del other["runs"]["breakout"]["reptile"]["3"]
    elif case == "a damaged runs record":
        other["runs"]["breakout"] = []
    second = write_evaluation(tmp_path / "second", other)
    if case == "damaged source":
        (tmp_path / "second" / "rl-eval.json").write_text('{"runs": ')
    elif case == "the same source twice":
        second = f"{second}/rl-eval.json,{second}"
    out = tmp_path / "arms"
    if case == "out is a run":
        write_evaluation(out, evaluation({"leap": 0.0}))
    elif case == "out holds a run's metrics":
        out.mkdir()
        (out / "metrics.jsonl").write_text("{}\n")
    elif case == "out is a file":
        out.write_text("not a directory")
    elif case == "out is a source":
        out = tmp_path / "second"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    sources = {"one source": leap_run, "the same source twice": second}.get(case, f"{leap_run},{second}")
    assert main(["rl-join", sources, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# ---------------------------------------------------------------------- MinAtar
@needs_minatar
def test_minatar_frames_are_zero_padded_to_ten_channels():
    env = make_vec_env(EnvSpec("minatar"), "breakout", [0, 1])
    obs = env.reset()
    assert obs.shape == (2, 10, 10, 10) and obs.dtype == torch.uint8
    assert obs[:, 4:].sum() == 0 and obs[:, :4].sum() > 0  # breakout has 4 channels of its own
    assert env.num_actions == 3  # minimal action set


@needs_minatar
def test_resumed_rl_run_equals_an_uninterrupted_one(tmp_path):
    from leap.engine.loop import fit
    from leap.experiments.rl.meta import RLMetaTrainer

    cfg = RunConfig(benchmark="minatar", meta_steps=2, meta_batch=1, task_steps=80, task_batch=8).resolved()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    fit(RLMetaTrainer(cfg), tmp_path / "a", log=lambda _: None)
    first = RunConfig.from_dict({**cfg.to_dict(), "meta_steps": 1}).resolved()
    fit(RLMetaTrainer(first), tmp_path / "b", log=lambda _: None)
    fit(RLMetaTrainer(cfg), tmp_path / "b", resume=True, log=lambda _: None)
    a, b = load_file(tmp_path / "a" / "init.safetensors"), load_file(tmp_path / "b" / "init.safetensors")
    assert set(a) == {k for k in a if k.startswith("encoder.")}
    assert all(torch.equal(a[k], b[k]) for k in a)
    records = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]


def sigterm_during_a_game(monkeypatch, meta_step: int, game: int):
    """Make RL meta-training send this process a real SIGTERM as it starts game ``game`` of
    meta-step ``meta_step`` (both 0-based); returns the original ``train_game``."""
    import leap.experiments.rl.meta as meta

    original = meta.train_game

    def terminated_during_a_game(spec, name, settings, seed_parts, *args, **kwargs):
        if seed_parts[2:] == (meta_step, game):
            os.kill(os.getpid(), signal.SIGTERM)
        return original(spec, name, settings, seed_parts, *args, **kwargs)

    monkeypatch.setattr(meta, "train_game", terminated_during_a_game)
    return original


@needs_minatar
def test_sigterm_stops_rl_meta_training_after_the_game_in_flight_and_resume_continues_inside_the_meta_step(
        tmp_path, monkeypatch):
    # An RL meta-step trains several games (hours at the paper's scale): a real SIGTERM
    # during the second game of meta-step 2 stops after that game with a checkpoint that
    # holds the meta-step's partial state (exit status 128 + 15), and --resume continues
    # with its third game and finishes the run bit for bit.
    import leap.experiments.rl.meta as meta
    from leap.engine.loop import fit
    from leap.experiments.rl.meta import RLMetaTrainer
    from leap.util.errors import RunStopped
    from leap.util.files import list_checkpoints, load_checkpoint

    cfg = RunConfig(benchmark="minatar", meta_steps=3, meta_batch=3, task_steps=80, task_batch=8).resolved()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    fit(RLMetaTrainer(cfg), tmp_path / "a", log=lambda _: None)
    original = sigterm_during_a_game(monkeypatch, meta_step=1, game=1)  # meta-step 2, its second game
    messages: list[str] = []
    with pytest.raises(RunStopped, match=r"interrupted inside meta-step 2 \(after game 2 of 3\)") as stopped:
        fit(RLMetaTrainer(cfg), tmp_path / "b", log=messages.append)
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    assert messages == ["SIGTERM received: stopping after the meta-step in flight, with a checkpoint"]
    step, path = list_checkpoints(tmp_path / "b" / "checkpoints")[-1]
    assert step == 1 and [g["game"] for g in load_checkpoint(path)["partial"]] == RLMetaTrainer(cfg).draw_games(1)[:2]
    monkeypatch.setattr(meta, "train_game", original)
    fit(RLMetaTrainer(cfg), tmp_path / "b", resume=True, log=lambda _: None)
    a, b = load_file(tmp_path / "a" / "init.safetensors"), load_file(tmp_path / "b" / "init.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)

    assert records(tmp_path / "b") == records(tmp_path / "a")  # helpers.torchrun's: without the times
    assert [r["step"] for r in records(tmp_path / "b")] == [1, 2, 3]


def rl_theta(path) -> dict[str, torch.Tensor]:
    from leap.util.files import load_checkpoint

    return {k: v for k, v in load_checkpoint(path)["learner"].items() if k.startswith("init.")}


@needs_minatar
def test_an_rl_meta_update_that_makes_theta0_non_finite_stops_with_theta0_intact_and_continues_with_a_lower_rate(
        tmp_path, capsys, monkeypatch):
    # The loop's meta-update (leap.engine.loop.meta_step) serves RL as it serves few-shot
    # runs. At this scale RL's meta-gradient is about 1e-3, so even the largest float32 rate
    # leaves θ0 finite: scaled by 1e4 (as a larger run's could be), the rate 3e38 given from
    # meta-step 2 on makes θ0 infinite. The run stops with the loop's message and θ0 as
    # meta-step 1 left it, and continues with --resume --meta-lr 0.5 as if run so.
    import leap.experiments.rl.meta as meta
    from leap.util.files import list_checkpoints

    out = tmp_path / "run"
    run = ["train", "--benchmark", "minatar", "--method", "leap", "--checkpoint-every", "1", "--out", str(out), *TINY]
    assert main([*run, "--meta-steps", "1", "--meta-lr", "0.5"]) == 0
    first = rl_theta(list_checkpoints(out / "checkpoints")[-1][1])
    original = meta.normalize_meta_gradient

    def scaled(learner, riders=()):
        tasks = original(learner, riders)
        for p in learner.parameters():
            p.grad.mul_(1e4)
        return tasks

    monkeypatch.setattr(meta, "normalize_meta_gradient", scaled)
    capsys.readouterr()
    assert main([*run, "--meta-steps", "3", "--resume", "--meta-lr", "3e38"]) == 1
    err = capsys.readouterr().err
    assert "meta-step 2 made θ0 non-finite" in err and "θ0 is kept at meta-step 1" in err
    assert "--resume --meta-lr X" in err
    step, path = list_checkpoints(out / "checkpoints")[-1]
    kept = rl_theta(path)
    assert step == 1 and kept.keys() == first.keys() and all(torch.equal(kept[k], first[k]) for k in first)
    assert all(bool(torch.isfinite(v).all()) for v in kept.values())
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    monkeypatch.setattr(meta, "normalize_meta_gradient", original)
    assert main([*run, "--meta-steps", "3", "--resume", "--meta-lr", "0.5"]) == 0
    assert "with meta learning rate 0.5 from meta-step 1" in capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["meta_lr"] == 0.5 and config["meta_lr_changes"] == [[1, 0.5]]
    plain = tmp_path / "plain"
    assert main([*run[:-len(TINY) - 1], str(plain), *TINY, "--meta-steps", "3", "--meta-lr", "0.5"]) == 0
    assert (out / "init.safetensors").read_bytes() == (plain / "init.safetensors").read_bytes()


@needs_minatar
def test_a_meta_lr_change_recorded_in_config_json_is_applied_by_rl_from_the_meta_step_it_names(tmp_path, capsys):
    # --resume --meta-lr 0.1 after meta-step 2 records [[2, 0.1]]: meta-steps 1-2 run at
    # the rate given first, meta-step 3 at 0.1; the recorded config trained from scratch is
    # the same run.
    from leap.engine.loop import fit
    from leap.experiments.rl.meta import RLMetaTrainer
    from leap.util.files import checkpoint_path

    def run(out, *args):
        return main(["train", "--benchmark", "minatar", "--method", "leap", "--checkpoint-every", "1",
                     "--keep-checkpoints", "0", "--out", str(out), *TINY, *args])

    assert run(tmp_path / "plain", "--meta-steps", "3", "--meta-lr", "0.5") == 0
    assert run(tmp_path / "changed", "--meta-steps", "2", "--meta-lr", "0.5") == 0
    assert run(tmp_path / "changed", "--meta-steps", "3", "--resume", "--meta-lr", "0.1") == 0
    config = json.loads((tmp_path / "changed" / "config.json").read_text())
    assert config["meta_lr_changes"] == [[2, 0.1]]
    cfg = RunConfig.from_dict(config).resolved()
    trainer = RLMetaTrainer(cfg)
    assert [trainer.meta_lr_at(s) for s in range(3)] == [0.5, 0.5, 0.1]
    (tmp_path / "again").mkdir()
    fit(trainer, tmp_path / "again", checkpoint_every=1, keep_checkpoints=0, log=lambda _: None)
    for step in (1, 2, 3):
        changed = rl_theta(checkpoint_path(tmp_path / "changed" / "checkpoints", step))
        again = rl_theta(checkpoint_path(tmp_path / "again" / "checkpoints", step))
        plain = rl_theta(checkpoint_path(tmp_path / "plain" / "checkpoints", step))
        assert all(torch.equal(changed[k], again[k]) for k in changed)
        assert all(torch.equal(changed[k], plain[k]) for k in changed) == (step < 3), step


@needs_minatar
def test_paired_evaluation_differs_only_in_the_encoder_init():
    from leap.experiments.rl.meta import evaluate_init, make_game_agent

    spec = EnvSpec("minatar")
    settings = A2CSettings(steps=240, num_envs=8, lr=1e-3)
    # The random encoder that seed 0 draws, given explicitly as an "init": identical runs.
    agent = make_game_agent(spec, 10, 3, 0, "rl-eval", "breakout", "agent")
    same = {k: v for k, v in agent.state_dict().items() if k.startswith("encoder.")}
    result = evaluate_init(spec, settings, ["breakout"], [0], {"given": same, "random": None})
    runs = result["runs"]["breakout"]
    assert runs["given"]["0"]["episode_returns"] == runs["random"]["0"]["episode_returns"]
    assert runs["given"]["0"]["episode_steps"] == runs["random"]["0"]["episode_steps"]


@needs_minatar
def test_minatar_smoke_run_through_the_cli(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--benchmark", "minatar", "--method", "leap", "--out", str(out), "--meta-steps", "2",
                 "--eval-seeds", "2", "--eval-games", "breakout", *TINY]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and all(r["valid_tasks"] == 1 for r in records)
    # Leap's meta-objective per game (the path energy, section 4.3's metric) is logged.
    assert all(r["train_path"] > 0 and r["game_paths"] == [r["train_path"]] for r in records)
    assert main(["rl-eval", str(out), "--no-progress"]) == 0
    result = json.loads((out / "rl-eval.json").read_text())
    assert set(result["runs"]["breakout"]) == {"leap", "random"}
    assert set(result["runs"]["breakout"]["leap"]) == {"0", "1"}
    assert (out / "rl-curves.png").stat().st_size > 0
    assert "| breakout | Leap | 2 |" in capsys.readouterr().out


@needs_minatar
def test_two_runs_evaluated_apart_draw_the_same_random_arm_so_rl_join_pairs_leap_and_reptile_by_seed(tmp_path,
                                                                                                     capsys):
    # the docs' three-arm comparison: Reptile's run evaluated with --no-baseline borrows the
    # random arm of Leap's evaluation; that holds only if seed s draws the same random agent
    # in every evaluation (another run, another process). Both arms evaluated here: rl-join
    # refuses random arms that differ.
    args = ["--benchmark", "minatar", "--meta-steps", "1", "--eval-seeds", "2", "--eval-games", "breakout", *TINY]
    runs = []
    for method in ("leap", "reptile"):
        runs.append(str(tmp_path / method))
        assert main(["train", *args, "--method", method, "--out", runs[-1]]) == 0
        assert main(["rl-eval", runs[-1], "--no-progress"]) == 0
    assert json.loads((tmp_path / "leap" / "rl-eval.json").read_text())["device"] == "cpu"
    assert main(["rl-join", ",".join(runs), "--out", str(tmp_path / "arms"), "--no-progress"]) == 0
    joined = json.loads((tmp_path / "arms" / "rl-summary.json").read_text())
    assert joined["labels"] == ["leap", "reptile", "random"] and joined["seeds"] == [0, 1]
    assert "| breakout | Leap - Reptile |" in (tmp_path / "arms" / "rl-eval.md").read_text()


def tiny_evaluated_minatar_args(eval_seeds: int) -> list[str]:
    """The options of a one-meta-step MinAtar Leap run whose rl-eval trains ``eval_seeds``
    agents of breakout per initialization (the rl-eval tests' run)."""
    return ["--benchmark", "minatar", "--method", "leap", "--meta-steps", "1", "--eval-seeds", str(eval_seeds),
            "--eval-games", "breakout", *TINY]


@needs_minatar
def test_rl_eval_keeps_earlier_agents_of_the_same_init_and_never_replaces_another_inits(tmp_path, capsys):
    import hashlib

    out = tmp_path / "run"
    args = tiny_evaluated_minatar_args(eval_seeds=1)
    assert main(["train", *args, "--out", str(out)]) == 0
    assert main(["rl-eval", str(out), "--no-progress"]) == 0
    path = out / "rl-eval.json"
    result = json.loads(path.read_text())
    assert result["init_sha256"] == hashlib.sha256((out / "init.safetensors").read_bytes()).hexdigest()
    planted = {**result["runs"]["breakout"]["leap"]["0"], "planted": True}
    result["runs"]["breakout"]["leap"]["0"] = planted
    assert result["spec"].pop("backend") == "gymnasium"  # as written before the backend was an option
    path.write_text(json.dumps(result))
    assert main(["rl-eval", str(out), "--no-progress"]) == 0  # same init: the earlier agents are kept
    assert json.loads(path.read_text())["runs"]["breakout"]["leap"]["0"].get("planted")
    other = tmp_path / "other"
    assert main(["train", *args, "--seed", "1", "--out", str(other)]) == 0
    (out / "init.safetensors").write_bytes((other / "init.safetensors").read_bytes())
    # Another init (the run trained on) or other settings: the earlier evaluation is kept, byte
    # for byte, and this one refused with one line naming --out; with --out it runs beside it.
    before = path.read_bytes()
    for extra in ([], ["--eval-steps", "300"]):
        capsys.readouterr()
        assert main(["rl-eval", str(out), *extra, "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert "another init, other settings" in err and "--out" in err and "\n" not in err, err
        assert path.read_bytes() == before
    # another name: its summary goes beside it, not over it (the episodes stay, so it resumes)
    assert main(["rl-eval", str(out), "--out", str(out / "new-init.json"), "--no-progress"]) == 0
    again = json.loads((out / "new-init.json").read_text())
    assert "planted" not in again["runs"]["breakout"]["leap"]["0"] and path.read_bytes() == before
    assert json.loads((out / "new-init-summary.json").read_text())["format"] == "rl-summary-1"
    assert again["init_sha256"] == hashlib.sha256((other / "init.safetensors").read_bytes()).hexdigest()


@needs_minatar
def test_rl_eval_split_over_two_copies_of_a_run_and_merged_equals_one_evaluation_of_every_seed(tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    args = tiny_evaluated_minatar_args(eval_seeds=2)
    assert main(["train", *args, "--out", str(run)]) == 0
    copy, whole = tmp_path / "copy", tmp_path / "whole"
    shutil.copytree(run, copy)
    shutil.copytree(run, whole)
    assert main(["rl-eval", str(whole), "--no-progress"]) == 0  # seeds 0 and 1 in one process
    assert main(["rl-eval", str(run), "--seeds", "0", "--no-progress"]) == 0
    assert main(["rl-eval", str(copy), "--seeds", "1", "--no-progress"]) == 0
    # the file itself (a run directory works too), and --seeds 0 here: the result names the seeds it holds
    assert main(["rl-eval", str(run), "--seeds", "0", "--merge", str(copy / "rl-eval.json"), "--no-progress"]) == 0
    merged, want = (json.loads((d / "rl-eval.json").read_text()) for d in (run, whole))
    assert merged["seeds"] == [0, 1]
    kept = json.loads((copy / "rl-eval.json").read_text())["runs"]["breakout"]
    # seed 1 kept from the copy (its measured seconds too), not trained again
    assert all(merged["runs"]["breakout"][label]["1"] == kept[label]["1"] for label in ("leap", "random"))

    def untimed(runs: dict) -> dict:  # an agent's seconds are measured, the rest is its learning
        return {game: {label: {seed: {k: v for k, v in agent.items() if k != "seconds"}
                               for seed, agent in agents.items()} for label, agents in labels.items()}
                for game, labels in runs.items()}

    assert untimed(merged["runs"]) == untimed(want["runs"])
    assert (run / "rl-eval.md").read_text() == (whole / "rl-eval.md").read_text()
    # resumed for seed 1 alone: nothing to train, and the file still names both seeds it holds
    assert main(["rl-eval", str(run), "--seeds", "1", "--no-progress"]) == 0
    assert json.loads((run / "rl-eval.json").read_text())["seeds"] == [0, 1]
    # Refused with one line, the result file left as it was: agents of another init, an agent
    # both files hold with other returns, a damaged runs record.
    other = tmp_path / "other"
    assert main(["train", *args, "--seed", "1", "--out", str(other)]) == 0
    assert main(["rl-eval", str(other), "--seeds", "0", "--no-progress"]) == 0
    conflict, damaged = json.loads((copy / "rl-eval.json").read_text()), json.loads((copy / "rl-eval.json").read_text())
    conflict["runs"]["breakout"]["leap"]["1"]["episode_returns"][0] += 1.0
    damaged["runs"]["breakout"]["leap"] = ["not", "agents"]
    for name, record in (("conflict.json", conflict), ("damaged.json", damaged)):
        (tmp_path / name).write_text(json.dumps(record))
    before = (run / "rl-eval.json").read_bytes()
    for source, message in ((other / "rl-eval.json", "another init"), (tmp_path / "conflict.json", "different returns"),
                            (tmp_path / "damaged.json", "damaged")):
        capsys.readouterr()
        assert main(["rl-eval", str(run), "--merge", str(source), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert "--merge" in err and message in err and "\n" not in err, err
        assert (run / "rl-eval.json").read_bytes() == before


@needs_minatar
def test_rl_eval_neither_resumes_nor_merges_agents_evaluated_on_another_device_kind(tmp_path, capsys):
    # A seed's random encoder and action stream are the device kind's draws, so agents of a
    # CUDA evaluation are not this CPU evaluation's agents, even of other seeds.
    import shutil

    run = tmp_path / "run"
    args = tiny_evaluated_minatar_args(eval_seeds=2)
    assert main(["train", *args, "--out", str(run)]) == 0
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    assert main(["rl-eval", str(run), "--seeds", "0", "--no-progress"]) == 0
    assert main(["rl-eval", str(copy), "--seeds", "1", "--no-progress"]) == 0
    for directory in (run, copy):
        record = json.loads((directory / "rl-eval.json").read_text())
        assert record["device"] == "cpu"
    elsewhere = json.loads((copy / "rl-eval.json").read_text())
    (tmp_path / "cuda.json").write_text(json.dumps({**elsewhere, "device": "cuda"}))
    before = (run / "rl-eval.json").read_bytes()
    capsys.readouterr()
    assert main(["rl-eval", str(run), "--merge", str(tmp_path / "cuda.json"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--merge" in err and "another device kind" in err and "\n" not in err, err
    assert (run / "rl-eval.json").read_bytes() == before
    legacy = {k: v for k, v in elsewhere.items() if k != "device"}  # written before the device was recorded
    (tmp_path / "legacy.json").write_text(json.dumps(legacy))
    assert main(["rl-eval", str(run), "--merge", str(tmp_path / "legacy.json"), "--no-progress"]) == 0
    assert json.loads((run / "rl-eval.json").read_text())["seeds"] == [0, 1]
    # resumed: a result file of CUDA agents is kept, not extended with CPU ones
    cuda = {**json.loads((run / "rl-eval.json").read_text()), "device": "cuda"}
    (run / "rl-eval.json").write_text(json.dumps(cuda))
    before = (run / "rl-eval.json").read_bytes()
    capsys.readouterr()
    assert main(["rl-eval", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "another device kind" in err and "\n" not in err, err
    assert (run / "rl-eval.json").read_bytes() == before


@needs_minatar
@pytest.mark.parametrize("damage", ["nan", "another model"])
def test_rl_eval_refuses_an_init_that_is_not_this_agents_encoder_with_one_line(tmp_path, capsys, damage):
    from safetensors.torch import save_file

    out = tmp_path / "run"
    assert main(["train", "--benchmark", "minatar", "--method", "leap", "--meta-steps", "1", "--eval-seeds", "1",
                 "--eval-games", "breakout", *TINY, "--out", str(out)]) == 0
    state = load_file(str(out / "init.safetensors"))
    if damage == "nan":
        next(iter(state.values())).view(-1)[0] = float("nan")
    else:
        state = {"layer.weight": torch.zeros(3, 3)}
    save_file(state, str(out / "init.safetensors"))
    capsys.readouterr()
    assert main(["rl-eval", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"leap: error: {out / 'init.safetensors'}: ") and "\n" not in err, err
    assert not (out / "rl-eval.json").exists()


# ---------------------------------------------------------------------- under torchrun
# Meta-batch 3 over 2 ranks: rank 0 trains games 0 and 1 of each meta-step, rank 1 game 2.
RL_RUN = ["train", "--benchmark", "minatar", "--method", "leap", "--meta-steps", "3", "--meta-batch", "3",
          "--task-steps", "80", "--task-batch", "8", "--unroll", "5", "--no-progress"]


@pytest.fixture(scope="module")
def rl_alone(tmp_path_factory):
    """The reference: the run in one process (in this one: no interpreter start-up)."""
    from leap.engine.rundir import release

    out = tmp_path_factory.mktemp("rl-alone") / "run"
    assert main([*RL_RUN, "--out", str(out)]) == 0
    release(out)
    return out


@needs_minatar
def test_a_resumed_rl_run_names_its_own_meta_step_in_each_game_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*RL_RUN, "--out", str(out), "--meta-steps", "1"]) == 0
    capsys.readouterr()
    assert main([*RL_RUN, "--out", str(out), "--meta-steps", "2", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "leap: meta-step 2/2, game 1 " in err and "meta-step 1/2" not in err, err


@needs_minatar
def test_rl_meta_batch_split_over_two_processes_learns_the_init_of_one_process_and_only_rank_0_writes(
        tmp_path, rl_alone):
    out = tmp_path / "run"
    proc = subprocess.run(torchrun("-m", "leap", *RL_RUN, "--out", str(out)), capture_output=True, text=True,
                          timeout=LIMIT_S)
    assert proc.returncode == 0, proc.stderr
    assert max_abs_diff(out, rl_alone) < 1e-5
    assert_same_records(records(out), records(rl_alone))  # games, their returns and steps, from both ranks
    assert "[rank 1/2] leap: trains tasks 2..2 of each meta-batch of 3; writes nothing" in proc.stderr
    assert proc.stdout.count("wrote") == 1


@needs_minatar
def test_rl_sigterm_on_one_rank_stops_every_rank_after_the_same_meta_step_and_resume_is_exact(tmp_path, rl_alone):
    # Under torchrun the ranks agree on a stop in the meta-gradient's all-reduce: a SIGTERM
    # that reaches rank 1 alone during meta-step 2 stops both after it, with rank 0's checkpoint.
    out = tmp_path / "run"
    args = [*RL_RUN, "--out", str(out)]
    (status0, err0), (status1, err1) = finish(launch(args, fault_env("sigterm", rank=1, step=2)), LIMIT_S)
    assert status0 == status1 == 128 + signal.SIGTERM, err0 + err1
    assert "interrupted at meta-step 2" in err0 and "interrupted at meta-step 2" in err1
    assert [r["step"] for r in records(out)] == [1, 2] and not (out / "init.safetensors").exists()
    (status0, err0), (status1, err1) = finish(launch([*args, "--resume"], dict(os.environ)), LIMIT_S)
    assert status0 == status1 == 0, err0 + err1
    assert max_abs_diff(out, rl_alone) < 1e-5
    assert_same_records(records(out), records(rl_alone))


@needs_minatar
def test_rl_rank_killed_mid_run_stops_the_other_with_one_line_and_resume_is_exact(tmp_path, rl_alone):
    out = tmp_path / "run"
    # The collective timeout is far longer than the limit: rank 0 must learn of rank 1's
    # end from the closed connection, at once.
    args = [*RL_RUN, "--out", str(out), "--checkpoint-every", "1", "--dist-timeout", str(10 * LIMIT_S)]
    (status0, err0), (status1, _) = finish(launch(args, fault_env("kill", rank=1, step=3)), LIMIT_S)
    assert status1 == -signal.SIGKILL
    assert status0 == 1 and "[rank 0/2] all-reduce failed: another rank stopped" in err0, err0
    (status0, err0), (status1, err1) = finish(launch([*args, "--resume"], dict(os.environ)), LIMIT_S)
    assert status0 == status1 == 0, err0 + err1
    assert "(meta-step 2)" in err1  # rank 1 continued from rank 0's checkpoint
    assert max_abs_diff(out, rl_alone) < 1e-5
    assert_same_records(records(out), records(rl_alone))


@needs_minatar
def test_rl_meta_step_stopped_alone_between_games_resumes_under_torchrun_to_the_init_of_one_process(
        tmp_path, rl_alone, monkeypatch):
    # Alone, a SIGTERM during game 1 of meta-step 2 leaves a checkpoint holding that game
    # (in the hook's accumulators); resumed over 2 ranks, rank 0 keeps it and trains game 2,
    # rank 1 trains game 3, and the game done is counted once.
    from leap.engine.rundir import release

    sigterm_during_a_game(monkeypatch, meta_step=1, game=0)  # meta-step 2, its first game
    out = tmp_path / "run"
    assert main([*RL_RUN, "--out", str(out)]) == 128 + signal.SIGTERM
    release(out)
    proc = subprocess.run(torchrun("-m", "leap", *RL_RUN, "--out", str(out), "--resume"), capture_output=True,
                          text=True, timeout=LIMIT_S)
    assert proc.returncode == 0, proc.stderr
    assert max_abs_diff(out, rl_alone) < 1e-5
    assert_same_records(records(out), records(rl_alone))


# ---------------------------------------------------------------------- ALE
@needs_ale
def test_ale_frames_are_84x84_rgb_and_stack_along_channels():
    env = make_vec_env(EnvSpec("atari", frame_stack=2), "Pong", [0, 1])
    obs = env.reset()
    assert obs.shape == (2, 6, 84, 84) and obs.dtype == torch.uint8
    assert torch.equal(obs[:, :3], obs[:, 3:])  # a new episode repeats its first frame
    result = env.step(np.zeros(2, dtype=np.int64))
    assert result.obs.shape == (2, 6, 84, 84) and torch.equal(result.obs[:, :3], obs[:, 3:])
    assert env.num_actions == 6


@needs_ale
def test_ale_smoke_run_on_pong_through_the_cli(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--benchmark", "atari", "--games", "Pong", "--eval-games", "Pong", "--eval-seeds", "1",
                 "--out", str(out), "--meta-steps", "1", *TINY, "--task-batch", "4"]) == 0
    init = load_file(out / "init.safetensors")
    assert init["encoder.0.weight"].shape == (16, 3, 8, 8)  # Mnih et al. 2013 on 84x84x3
    record = json.loads((out / "metrics.jsonl").read_text())
    assert record["env_steps"] == 80 and np.isfinite(record["train_loss"])
