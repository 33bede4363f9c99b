"""Sequential against batched engine on CPU, by model size (not a test: a measurement).

One Leap meta-step with each engine (the hook task by task, or all tasks at once), for
the built-in benchmark's MLP (5 tasks x 50 steps, batch 20) and for the Omniglot convnet
with 4 to 32 filters (random 28x28 images, 20 classes, 4 tasks x 10 steps, batch 20);
for each engine the best of two interleaved rounds, each the median of 4 timed meta-steps
after one untimed. Also prints each model's FLOPs per inner step (forward + backward on
one batch, ``torch.utils.flop_counter``), the quantity the crossover follows.

    OMP_NUM_THREADS=1 python benchmarks/engine_crossover.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from leap.engine.batched import BatchedEngine
from leap.engine.inner import InnerLoop, train_task
from leap.learners import Leap
from leap.models import ConvNet
from leap.tasks.base import Task
from leap.tasks.builtin import BuiltinBenchmark
from leap.util.seeding import derived_generator


def random_image_tasks(n: int = 4) -> list[Task]:
    tasks = []
    for i in range(n):
        g = torch.Generator().manual_seed(i)
        x = torch.rand(400, 1, 28, 28, generator=g)
        y = torch.randint(20, (400,), generator=g)
        tasks.append(Task(f"t{i}", x[:300], y[:300], x[300:], y[300:], 20, source=i))
    return tasks


def median_ms(meta_step: Callable[[int], None], repeats: int = 4) -> float:
    meta_step(0)  # untimed
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        meta_step(r + 1)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def compare(label: str, model: nn.Module, tasks: list[Task], steps: int) -> None:
    loop = InnerLoop(steps, 20, 0.1)
    learner = Leap(model)
    engine = BatchedEngine(model, loop)

    def draws(step: int) -> list[tuple[Task, torch.Generator]]:
        return [(task, derived_generator(0, "task", step, i)) for i, task in enumerate(tasks)]

    def sequential(step: int) -> None:
        for task, generator in draws(step):
            learner.init_task()
            learner.to(model)
            train_task(model, task, loop, generator, learner)
        learner.normalize()

    def batched(step: int) -> None:
        engine.train(draws(step), learner)
        learner.normalize()

    rounds = [(median_ms(sequential), median_ms(batched)) for _ in range(2)]  # interleaved
    seq, bat = min(r[0] for r in rounds), min(r[1] for r in rounds)
    x, y = tasks[0].sample(20, torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as flops:
        F.cross_entropy(model(x), y).backward()
    params = sum(p.numel() for p in model.parameters())
    print(f"{label:20s} {params:8d} parameters  {flops.get_total_flops() / 1e6:8.1f} MFLOP per step  "
          f"sequential {seq:6.0f} ms  batched {bat:6.0f} ms  batched speed-up {seq / bat:.2f}x", flush=True)


def main() -> None:
    builtin = BuiltinBenchmark()
    compare("built-in MLP", builtin.make_model(), [builtin.task("train", s) for s in range(5)], steps=50)
    for filters in (4, 8, 16, 32):
        model = ConvNet(in_channels=1, num_classes=20, image_size=28, filters=filters)
        compare(f"convnet, {filters} filters", model, random_image_tasks(), steps=10)


if __name__ == "__main__":
    main()
