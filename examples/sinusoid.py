"""Sinusoid regression: Leap's initialization against Reptile's and a random one.

A task is y = a sin(x + b) with amplitude a ~ U(0.1, 5) and phase b ~ U(0, π), x ~ U(-5, 5)
(the regression problem of MAML and Reptile). The model is an MLP 1-40-40-1. Each method
meta-trains an initialization with the same hook calls in the same loop; then every
initialization is trained for 10 SGD steps on 100 held-out tasks, and the mean squared
error on each task's held-out points is printed.

    python examples/sinusoid.py            # 93 s (held-out MSE: Leap 0.09, Reptile 0.10, random 3.73)
    python examples/sinusoid.py --quick    # 11 s (the tests run this)

Times measured on the 2-core machine of docs/benchmarks.md, one torch thread, beside two
other single-thread jobs.

The meta-optimizer is Adam with lr 0.01 for both meta-learners, the README's rule: Adam's
step does not depend on the meta-gradient's scale, which differs between methods (Leap's
length metric sums unit-length steps, so its size grows with the inner steps K; Reptile's is
the parameters' movement θ_K - θ0). With plain SGD the rate must be found per problem:
here Leap's best was 0.01 and Reptile's 1 (tools/meta_lr_study.py; docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn

import leap
from leap.util.threads import thread_policy


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 1))


def sample_task(generator: torch.Generator) -> tuple[float, float]:
    amplitude = 0.1 + 4.9 * torch.rand((), generator=generator).item()
    phase = math.pi * torch.rand((), generator=generator).item()
    return amplitude, phase


def batch(task: tuple[float, float], n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    amplitude, phase = task
    x = 10 * torch.rand(n, 1, generator=generator) - 5
    return x, amplitude * torch.sin(x + phase)


def train_task(model: nn.Module, task: tuple[float, float], steps: int, generator: torch.Generator,
               learner: leap.MetaLearner | None = None) -> nn.Module:
    """``steps`` SGD steps (lr 0.01, batches of 10) on one task; the learner's hook calls
    where a meta-learner watches the process."""
    loss_fn = nn.MSELoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(steps):
        x, y = batch(task, 10, generator)
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        if learner is not None:
            learner.update(loss, model)  # after backward, before the optimizer step
        opt.step()
    if learner is not None:
        x, y = batch(task, 10, generator)
        with torch.no_grad():
            learner.end_task(model, loss_fn(model(x), y))  # f(θ_K) closes the last segment
    return model


def meta_train(learner: leap.MetaLearner, model: nn.Module, meta_steps: int, generator: torch.Generator,
               name: str = "") -> None:
    meta_opt = torch.optim.Adam(learner.parameters(), lr=0.01)  # the README's rule, for any learner
    start = time.perf_counter()
    for step in range(1, meta_steps + 1):
        if step % max(1, meta_steps // 10) == 0:  # progress: a line every 10% of the meta-steps
            print(f"{name}: meta-step {step}/{meta_steps} ({time.perf_counter() - start:.0f} s)", flush=True)
        for _ in range(5):  # tasks per meta-step
            learner.init_task()
            learner.to(model)  # model <- θ0
            train_task(model, sample_task(generator), 10, generator, learner)
        learner.normalize()  # the mean meta-gradient -> θ0.grad
        meta_opt.step()
        meta_opt.zero_grad()


def held_out_mse(init: nn.Module, tasks: int, seed: int) -> float:
    """Mean query MSE after 10 SGD steps from ``init`` on held-out tasks (the same tasks
    and batches for every initialization)."""
    generator = torch.Generator().manual_seed(seed)
    errors = []
    for _ in range(tasks):
        task = sample_task(generator)
        model = make_model()
        model.load_state_dict(init.state_dict())
        train_task(model, task, 10, generator)
        x, y = batch(task, 100, generator)
        with torch.no_grad():
            errors.append(nn.functional.mse_loss(model(x), y).item())
    return sum(errors) / len(errors)


def main() -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short run (seconds), as the tests use")
    parser.add_argument("--meta-steps", type=int, default=None, help="default 1000 (--quick: 30)")
    args = parser.parse_args()
    meta_steps = args.meta_steps or (30 if args.quick else 1000)
    eval_tasks = 20 if args.quick else 100
    torch.manual_seed(0)
    results = {}
    methods = {
        "Leap": lambda m: leap.Leap(m, metric="length"),
        "Reptile": lambda m: leap.Reptile(m),
        "random init": None,
    }
    for name, build in methods.items():
        torch.manual_seed(0)  # the same starting point for every method
        model = make_model()
        if build is not None:
            learner = build(model)
            meta_train(learner, model, meta_steps, torch.Generator().manual_seed(1), name)
            learner.to(model)
        results[name] = held_out_mse(model, eval_tasks, seed=2)
        print(f"{name:12s} query MSE after 10 steps on {eval_tasks} held-out tasks: {results[name]:.2f}")
    return results


if __name__ == "__main__":
    # The thread policy of leap's commands: one thread for a model this small (faster than
    # torch's default on a CPU; OMP_NUM_THREADS, when set, wins).
    with thread_policy(None, small_model=True):
        main()
