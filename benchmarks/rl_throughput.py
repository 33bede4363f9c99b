"""Environment steps per CPU-second of the A2C loop on MinAtar (not a test: a measurement).

For each game and number of parallel environments: the raw environments alone (random
actions through ``VecEnv.step``, the ceiling no learner can pass) and the project's A2C
loop (``train_agent``: acting, the loss, backward, RMSprop), each over ``--steps``
environment steps after a short warm-up, timed in CPU seconds of this process
(``time.process_time``), best of ``--repeats``. Run it on a quiet machine, one thread:

    OMP_NUM_THREADS=1 python benchmarks/rl_throughput.py [--envs 16,64] [--steps 20000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from leap.experiments.rl.a2c import A2CSettings, train_agent
from leap.experiments.rl.envs import MINATAR_GAMES, EnvSpec, make_vec_env
from leap.experiments.rl.meta import make_game_agent


def raw_env(spec: EnvSpec, game: str, envs: int, steps: int) -> float:
    env = make_vec_env(spec, game, list(range(envs)))
    rng = np.random.default_rng(0)
    env.reset()
    start = time.process_time()
    for _ in range(steps // envs):
        env.step(rng.integers(env.num_actions, size=envs))
    seconds = time.process_time() - start
    env.close()
    return (steps // envs) * envs / seconds


def a2c(spec: EnvSpec, game: str, envs: int, steps: int) -> float:
    env = make_vec_env(spec, game, list(range(envs)))
    model = make_game_agent(spec, env.obs_shape[0], env.num_actions, 0, "bench")
    settings = A2CSettings(steps=steps, num_envs=envs, unroll=5, lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    train_agent(model, env, A2CSettings(steps=envs * 5 * 5, num_envs=envs, unroll=5, lr=1e-3), generator)  # warm-up
    start = time.process_time()
    curve = train_agent(model, env, settings, generator)
    seconds = time.process_time() - start
    env.close()
    return curve.steps / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", default=",".join(MINATAR_GAMES))
    parser.add_argument("--envs", default="16,64")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    spec = EnvSpec("minatar")
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); env steps per CPU-second, best of "
          f"{args.repeats}")
    print("| game | envs | raw environments | A2C loop | A2C / raw |\n|---|---|---|---|---|")
    for game in args.games.split(","):
        for envs in (int(e) for e in args.envs.split(",")):
            raw = max(raw_env(spec, game, envs, args.steps) for _ in range(args.repeats))
            loop = max(a2c(spec, game, envs, args.steps) for _ in range(args.repeats))
            rows.append({"game": game, "envs": envs, "raw": raw, "a2c": loop})
            print(f"| {game} | {envs} | {raw:,.0f} | {loop:,.0f} | {loop / raw:.2f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "steps": args.steps,
                       "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
