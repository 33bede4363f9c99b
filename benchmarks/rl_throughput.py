"""Environment steps per CPU-second of the A2C loop on MinAtar or the ALE (not a test: a
measurement).

For each game, backend and number of parallel environments: the raw environments alone
(random actions through ``VecEnv.step``, the ceiling no learner can pass) and the project's
A2C loop (``train_agent``: acting, the loss, backward, RMSprop), each over ``--steps``
environment steps after a short warm-up, timed in CPU seconds of this process, every thread
included (``time.process_time``: envpool steps its games on threads of its own) and in wall
seconds; best of ``--repeats``, the repeats of the backends interleaved. Run it on a quiet
machine, one thread:

    OMP_NUM_THREADS=1 python benchmarks/rl_throughput.py [--envs 16,64] [--steps 20000] [--json FILE]
    OMP_NUM_THREADS=1 python benchmarks/rl_throughput.py --suite atari --games Breakout \
        --backends gymnasium,envpool --envs 16 --steps 4000
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


def raw_env(spec: EnvSpec, game: str, envs: int, steps: int) -> tuple[float, float]:
    """(steps per CPU-second, steps per wall-second) of random actions."""
    env = make_vec_env(spec, game, list(range(envs)))
    rng = np.random.default_rng(0)
    env.reset()
    for _ in range(5):  # warm-up
        env.step(rng.integers(env.num_actions, size=envs))
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(steps // envs):
        env.step(rng.integers(env.num_actions, size=envs))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    env.close()
    return (steps // envs) * envs / cpu, (steps // envs) * envs / wall


def a2c(spec: EnvSpec, game: str, envs: int, steps: int) -> tuple[float, float]:
    """(steps per CPU-second, steps per wall-second) of the A2C loop."""
    env = make_vec_env(spec, game, list(range(envs)))
    model = make_game_agent(spec, env.obs_shape[0], env.num_actions, 0, "bench")
    settings = A2CSettings(steps=steps, num_envs=envs, unroll=5, lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    train_agent(model, env, A2CSettings(steps=envs * 5 * 5, num_envs=envs, unroll=5, lr=1e-3), generator)  # warm-up
    cpu, wall = time.process_time(), time.perf_counter()
    curve = train_agent(model, env, settings, generator)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    env.close()
    return curve.steps / cpu, curve.steps / wall


def best(measure, specs: dict[str, EnvSpec], game: str, envs: int, steps: int,
         repeats: int) -> dict[str, tuple[float, float]]:
    """Per backend, the best (CPU rate, wall rate) of ``repeats`` runs of ``measure``, the
    backends interleaved so that a change in the machine's load affects each alike."""
    runs: dict[str, list[tuple[float, float]]] = {b: [] for b in specs}
    for _ in range(repeats):
        for backend, spec in specs.items():
            runs[backend].append(measure(spec, game, envs, steps))
    return {b: (max(r[0] for r in rs), max(r[1] for r in rs)) for b, rs in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=("minatar", "atari"), default="minatar")
    parser.add_argument("--backends", default="gymnasium", help="atari: gymnasium and/or envpool")
    parser.add_argument("--games", help="default: every MinAtar game; Breakout on atari")
    parser.add_argument("--envs", default="16,64")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    games = args.games or (",".join(MINATAR_GAMES) if args.suite == "minatar" else "Breakout")
    backends = args.backends.split(",")
    specs = {b: EnvSpec(args.suite, backend=b) for b in backends}
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); env steps per CPU-second (per "
          f"wall-second), best of {args.repeats}")
    print("| game | backend | envs | raw environments | A2C loop | A2C / raw |\n|---|---|---|---|---|---|")
    for game in games.split(","):
        for envs in (int(e) for e in args.envs.split(",")):
            raw = best(raw_env, specs, game, envs, args.steps, args.repeats)
            loop = best(a2c, specs, game, envs, args.steps, args.repeats)
            for b in backends:
                rows.append({"game": game, "backend": b, "envs": envs, "raw": raw[b][0], "a2c": loop[b][0],
                             "raw_wall": raw[b][1], "a2c_wall": loop[b][1]})
                print(f"| {game} | {b} | {envs} | {raw[b][0]:,.0f} ({raw[b][1]:,.0f}) | {loop[b][0]:,.0f} "
                      f"({loop[b][1]:,.0f}) | {loop[b][0] / raw[b][0]:.2f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "steps": args.steps,
                       "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
