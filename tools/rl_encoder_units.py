"""What a meta-learned RL encoder does to each game's features (a diagnostic, issue 26).

For θ0 as built (meta-step 0) and θ0 in a checkpoint of a ``leap train --benchmark minatar``
run, a uniformly random policy plays each game for ``--frames`` frames (seeded); the
encoder's output units are then counted as dead when no frame activates them, and the
mean feature norm and the entropy of the initial policy (a fresh head, seeded) are given.

    OMP_NUM_THREADS=1 python tools/rl_encoder_units.py RUN RUN/checkpoints/checkpoint-00000020.pt
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from leap.experiments.config import read_run_config
from leap.experiments.rl.envs import make_game, observation_channels
from leap.experiments.rl.meta import RLMetaTrainer, make_game_agent
from leap.experiments.rl.options import env_spec
from leap.util.files import load_checkpoint


def frames(spec, game: str, count: int, seed: int = 0) -> torch.Tensor:
    """(count, C, 10, 10) observations of ``game`` under a uniformly random policy."""
    env, rng, seen = make_game(spec, game, seed), np.random.default_rng(seed), []
    obs = env.reset()
    for _ in range(count):
        seen.append(obs)
        obs, _, done = env.step(int(rng.integers(env.num_actions)))
        if done:
            obs = env.reset()
    return torch.as_tensor(np.stack(seen), dtype=torch.float32), env.num_actions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("checkpoint")
    parser.add_argument("--games", default="freeway,asterix,seaquest,breakout,space_invaders")
    parser.add_argument("--frames", type=int, default=2000)
    args = parser.parse_args()
    cfg = read_run_config(Path(args.run), {})
    spec = env_spec(cfg.benchmark, cfg.extra)
    trainer = RLMetaTrainer(cfg)
    inits = {"meta-step 0": trainer.init_state()}
    trainer.load_state_dict(load_checkpoint(args.checkpoint))
    inits[f"meta-step {trainer.step_count}"] = trainer.init_state()
    print("| game | θ0 | dead units | mean feature norm | initial policy entropy (max) |")
    print("|---|---|---|---|---|")
    for game in args.games.split(","):
        x, actions = frames(spec, game, args.frames)
        for name, init in inits.items():
            agent = make_game_agent(spec, observation_channels(spec), actions, 0, "probe-head", game)
            agent.load_state_dict({**agent.state_dict(), **init})
            with torch.no_grad():
                h = agent.encoder(x)
                log_p = agent.policy(h).log_softmax(-1)
            entropy = float(-(log_p.exp() * log_p).sum(-1).mean())
            dead = float((h.max(0).values <= 0).float().mean())
            print(f"| {game} | {name} | {dead:.0%} of {h.shape[1]} | {float(h.norm(dim=1).mean()):.2f} | "
                  f"{entropy:.3f} ({math.log(actions):.3f}) |")


if __name__ == "__main__":
    main()
