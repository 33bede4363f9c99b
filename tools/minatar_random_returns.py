"""Mean episode return of the uniform random policy on each MinAtar game (the floor a
learning agent must clear): 16 environments, 200,000 steps, seed 0.

    OMP_NUM_THREADS=1 python tools/minatar_random_returns.py
"""

import numpy as np

from leap.experiments.rl.envs import MINATAR_GAMES, EnvSpec, make_vec_env

spec = EnvSpec("minatar")
for game in MINATAR_GAMES:
    env = make_vec_env(spec, game, list(range(16)))
    rng = np.random.default_rng(0)
    env.reset()
    returns = []
    for _ in range(200_000 // 16):
        result = env.step(rng.integers(env.num_actions, size=16))
        returns += [episode_return for episode_return, _ in result.episodes]
    print(f"{game}: {np.mean(returns):.2f} over {len(returns)} episodes (200k steps, uniform random actions)")
