"""Cost of the Leap hook per inner step (not a test: a measurement).

Omniglot convnet (4 x [conv 3x3 64, max-pool 2, batch-norm, ReLU] + linear 20), 28x28
inputs, batch 20, SGD lr 0.1. Plain training and training with ``Leap.update`` are
timed in interleaved blocks (ABBA order, so drifts in machine load hit both alike).
The overhead is the added time after ``backward`` (hook + optimizer step, medians over
blocks) as a fraction of the plain step: forward and backward are identical in both
variants and carry most of the timing noise. As a check, the whole-step ratio (median
over pairs of adjacent blocks, with a bootstrap 95% interval) is printed too.

    python benchmarks/hook_overhead.py [--device cpu|cuda] [--steps 50] [--repeats 20] [--cache-study]
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time

import torch
import torch.nn.functional as F

import leap
from leap.models import ConvNet


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_block(model, learner, opt, data, device) -> tuple[float, float]:
    """Seconds per step over one block of steps: the whole step, and the part after
    ``backward`` (hook + optimizer step + zero_grad), which is where the variants differ."""
    sync(device)
    after_backward = 0.0
    start = time.perf_counter()
    for x, y in data:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        sync(device)
        tail = time.perf_counter()
        if learner is not None:
            learner.update(loss, model)
        opt.step()
        opt.zero_grad()
        sync(device)
        after_backward += time.perf_counter() - tail
    return (time.perf_counter() - start) / len(data), after_backward / len(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=50, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=20, help="blocks per variant")
    parser.add_argument("--cache-study", action="store_true",
                        help="also time one update alone: caches warm, evicted, and right after forward+backward")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = ConvNet().to(device)
    learner = leap.Leap(model, metric="length", loss_in_manifold=True, stabilizer=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = [(torch.rand(20, 1, 28, 28, device=device), torch.randint(20, (20,), device=device))
            for _ in range(args.steps)]
    learner.init_task()
    learner.to(model)
    for variant in (None, learner):  # warm-up
        time_block(model, variant, opt, data[:5], device)
    plain, hooked, ratios, plain_tail, hooked_tail = [], [], [], [], []
    for repeat in range(args.repeats):
        # ABBA order: a drift in machine speed within a pair hits both variants alike
        order = (None, learner) if repeat % 2 == 0 else (learner, None)
        times = {id(v): time_block(model, v, opt, data, device) for v in order}
        (p_step, p_tail), (h_step, h_tail) = times[id(None)], times[id(learner)]
        plain.append(p_step)
        hooked.append(h_step)
        ratios.append(h_step / p_step)
        plain_tail.append(p_tail)
        hooked_tail.append(h_tail)
    p, h = statistics.median(plain), statistics.median(hooked)
    low, high = bootstrap_median_interval(ratios)
    added = statistics.median(hooked_tail) - statistics.median(plain_tail)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    print(f"device: {device} ({where}); torch {torch.__version__}")
    print(f"plain SGD step:      {1000 * p:.3f} ms (median of {args.repeats} blocks of {args.steps})")
    print(f"with Leap.update:    {1000 * h:.3f} ms")
    # Forward and backward are the same in both variants and carry most of the noise, so
    # the added cost is measured where the variants differ: after backward.
    print(f"after backward:      {1000 * statistics.median(plain_tail):.3f} ms plain, "
          f"{1000 * statistics.median(hooked_tail):.3f} ms with the hook")
    print(f"hook overhead:       {100 * added / p:+.2f} % of a step (the added time after backward)")
    print(f"whole-step check:    {100 * (statistics.median(ratios) - 1):+.2f} % (median over the {args.repeats} "
          f"pairs of adjacent blocks; 95% bootstrap interval {100 * (low - 1):+.2f} % to {100 * (high - 1):+.2f} %)")
    if args.cache_study:
        cache_study(model, learner, data, device)

def cache_study(model, learner, data, device, calls: int = 60) -> None:
    """Median time of one ``update`` alone, by the state of the caches before it."""
    x, y = data[0]
    evict = torch.empty(16_000_000, device=device)  # 64 MB written between calls

    def forward_backward():
        model.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    loss = forward_backward()
    before = {"caches warm": lambda: None, "after writing 64 MB": lambda: evict.fill_(1.0),
              "after forward+backward": forward_backward}
    for label, prepare in before.items():
        times = []
        for _ in range(calls):
            prepare()
            sync(device)
            start = time.perf_counter()
            learner.update(loss, model)
            sync(device)
            times.append(time.perf_counter() - start)
        print(f"update alone, {label + ':':24s} {1e6 * statistics.median(times):7.1f} us (median of {calls})")


def bootstrap_median_interval(values: list[float], resamples: int = 2000) -> tuple[float, float]:
    """2.5th and 97.5th percentiles of the median over resamples of ``values``."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]

if __name__ == "__main__":
    main()
