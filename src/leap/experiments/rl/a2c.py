"""Advantage actor-critic (synchronous A2C) with the hyperparameters of appendix F.

One agent update: every environment of the batch acts for ``unroll`` steps with the
current policy, then the n-step returns bootstrapped from the value of the last state
give the policy-gradient, value and entropy terms of one loss, and the optimizer steps
once. So a game's learning process is a sequence of updates, one per
``num_envs x unroll`` environment steps (160 with the paper's 32 x 5), and each update is
one step θ_i -> θ_{i+1} of the path Leap measures: a meta-learner's hook is called after
every backward pass and before every optimizer step, exactly as in supervised training.

Rewards are clipped to [-reward_clip, reward_clip] for learning only; episode returns are
reported unclipped. An episode's end (game over, or a time cap) cuts the return at that
step, without bootstrapping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leap.engine.inner import make_optimizer
from leap.experiments.rl.agent import ActorCritic
from leap.experiments.rl.envs import VecEnv
from leap.learners import MetaLearner
from leap.util import checks

OPTIMIZERS = ("rmsprop", "adam", "sgd")


@dataclass(frozen=True)
class A2CSettings:
    """One game's learning process (appendix F defaults).

    ``steps`` is the budget in environment steps summed over the parallel environments
    (agent steps: an ALE step is 4 emulator frames), rounded up to whole updates.
    RMSprop uses alpha 0.99 and eps 1e-4 as in the paper (torch adds eps outside the
    square root). ``max_grad_norm`` 0 disables gradient clipping (the paper names none).
    """

    steps: int = 5_000_000
    num_envs: int = 32
    unroll: int = 5
    lr: float = 1e-4
    optimizer: str = "rmsprop"
    discount: float = 0.99
    entropy_cost: float = 0.01
    value_cost: float = 0.5
    reward_clip: float = 5.0
    max_grad_norm: float = 0.0

    def __post_init__(self) -> None:
        checks.positive_ints(self, ("steps", "num_envs", "unroll"))
        checks.positive_number("lr", self.lr)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not 0.0 <= self.discount <= 1.0:
            raise ValueError(f"discount must be in [0, 1], got {self.discount!r}")
        for name in ("entropy_cost", "value_cost", "max_grad_norm"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        checks.positive_number("reward_clip", self.reward_clip)

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.unroll

    @property
    def updates(self) -> int:
        return math.ceil(self.steps / self.steps_per_update)

    def make_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        # RMSprop as in appendix F (decay 0.99, epsilon 1e-4).
        options = {"alpha": 0.99, "eps": 1e-4} if self.optimizer == "rmsprop" else {}
        return make_optimizer(self.optimizer, params, self.lr, **options)


@dataclass
class Rollout:
    """``unroll`` steps of every environment: observations (T, N, C, H, W) uint8, the
    actions (T, N), clipped rewards (T, N), episode ends (T, N) and the observation after
    the last step (N, C, H, W), all on the learner's device; and the acting passes' own
    outputs, policy logits (T·N, A) and values (T·N,), still attached to the graph, so
    the loss needs no second forward pass over the same observations."""

    obs: Tensor
    actions: Tensor
    rewards: Tensor
    dones: Tensor
    last_obs: Tensor
    obs_scale: float
    logits: Tensor | None = None
    values: Tensor | None = None


@dataclass
class AgentCurve:
    """What one game's training produced.

    ``episode_steps[j]`` is the environment step count (over all environments) at which
    episode ``j`` ended and ``episode_returns[j]`` its unclipped return; ``losses`` (U,)
    is the A2C loss of each update (on the device, no sync).
    """

    game: str
    steps: int
    updates: int
    losses: Tensor
    episode_steps: list[int] = field(default_factory=list)
    episode_returns: list[float] = field(default_factory=list)

    def mean_return(self, last: int | None = None) -> float:
        """Mean return of the finished episodes (the ``last`` ones only); NaN if none."""
        returns = self.episode_returns if last is None else self.episode_returns[-last:]
        return float(np.mean(returns)) if returns else float("nan")


def a2c_loss(model: nn.Module, rollout: Rollout, settings: A2CSettings, rescore: bool = False) -> Tensor:
    """Policy-gradient + value_cost·value error - entropy_cost·entropy, averaged over the
    T x N steps; the returns bootstrap from V(last_obs) at the current parameters.

    The policy and values are the acting passes' outputs kept in ``rollout`` (one forward
    pass per observation); ``rescore`` (or a rollout without them) evaluates the
    observations again at the model's current parameters (f(θ_K) for ``end_task``)."""
    t = rollout.actions.shape[0]
    if rescore or rollout.logits is None or rollout.values is None:
        logits, values = model(rollout.obs.flatten(0, 1).float() * rollout.obs_scale)
    else:
        logits, values = rollout.logits, rollout.values
    with torch.no_grad():
        _, bootstrap = model(rollout.last_obs.float() * rollout.obs_scale)
        returns = torch.empty_like(rollout.rewards)
        running = bootstrap
        not_done = 1.0 - rollout.dones
        for step in range(t - 1, -1, -1):
            running = rollout.rewards[step] + settings.discount * not_done[step] * running
            returns[step] = running
    returns = returns.flatten()
    log_probs = F.log_softmax(logits, dim=-1)
    taken = log_probs.gather(1, rollout.actions.flatten().unsqueeze(1)).squeeze(1)
    advantage = (returns - values).detach()
    policy_loss = -(taken * advantage).mean()
    value_loss = (returns - values).square().mean()
    entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
    return policy_loss + settings.value_cost * value_loss - settings.entropy_cost * entropy


def train_agent(
    model: ActorCritic,
    env: VecEnv,
    settings: A2CSettings,
    generator: torch.Generator,
    learner: MetaLearner | None = None,
) -> AgentCurve:
    """Train ``model`` on ``env`` with A2C for ``settings.updates`` updates from its
    current parameters (the caller resets the environments' seeds and the model).

    With a ``learner`` the hook protocol of [`leap.learners.base`][leap.learners.base] is followed:
    ``update(loss, model)`` after every backward pass and before gradient clipping and
    the optimizer step, and ``end_task`` with the loss at θ_K on the last rollout (the
    caller calls ``init_task``/``to`` before). Actions are sampled with ``generator``
    (on the model's device), so a run is reproducible from its seeds.
    """
    if env.num_envs != settings.num_envs:
        raise ValueError(f"env has {env.num_envs} environments, settings say {settings.num_envs}")
    device = next(model.parameters()).device
    model.train()
    opt = settings.make_optimizer(list(model.parameters()))
    curve = AgentCurve(env.name, 0, 0, torch.zeros(settings.updates, device=device))
    obs = env.reset().to(device)
    rollout = None
    for update in range(settings.updates):
        rollout, obs = collect(model, env, obs, settings, generator, curve)
        loss = a2c_loss(model, rollout, settings)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        if learner is not None:
            learner.update(loss, model)
        if settings.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        opt.step()
        curve.losses[update] = loss.detach()
        curve.updates += 1
    if learner is not None:
        if learner.final_loss is None or rollout is None:
            learner.end_task(model)
        else:
            # f(θ_K) on the task's latest data: the last rollout, re-scored at θ_K.
            with torch.no_grad():
                learner.end_task(model, a2c_loss(model, rollout, settings, rescore=True))
    return curve


def collect(model: ActorCritic, env: VecEnv, obs: Tensor, settings: A2CSettings, generator: torch.Generator,
            curve: AgentCurve) -> tuple[Rollout, Tensor]:
    """Act for ``unroll`` steps in every environment; returns the rollout (with the
    acting passes' logits and values, for the loss) and the next observation. Finished
    episodes are appended to ``curve``."""
    device = obs.device
    observations, actions, rewards, dones, all_logits, all_values = [], [], [], [], [], []
    for _ in range(settings.unroll):
        logits, values = model(obs.float() * env.obs_scale)  # the parameters do not change within a rollout
        all_logits.append(logits)
        all_values.append(values)
        # An agent whose parameters overflowed (a θ0 far too large) has NaN probabilities:
        # it then acts uniformly, so its game runs to the end with a NaN loss and is left
        # out of the meta-gradient as a failed task, instead of multinomial raising.
        probs = torch.nan_to_num(F.softmax(logits.detach(), dim=-1), nan=1.0)
        action = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        result = env.step(action.cpu().numpy())
        observations.append(obs)
        actions.append(action)
        rewards.append(torch.from_numpy(np.clip(result.reward, -settings.reward_clip, settings.reward_clip)))
        dones.append(torch.from_numpy(result.done.astype(np.float32)))
        curve.steps += env.num_envs
        for episode_return, _ in result.episodes:
            curve.episode_steps.append(curve.steps)
            curve.episode_returns.append(episode_return)
        obs = result.obs.to(device)
    rollout = Rollout(torch.stack(observations), torch.stack(actions), torch.stack(rewards).to(device),
                      torch.stack(dones).to(device), obs, env.obs_scale, torch.cat(all_logits), torch.cat(all_values))
    return rollout, obs
