"""Cost of the Leap hook per inner step (not a test: a measurement).

``--model convnet`` (default): the Omniglot convnet (4 x [conv 3x3 64, max-pool 2,
batch-norm, ReLU] + linear 20), 28x28 inputs, batch 20, SGD lr 0.1. ``--model
transformer``: charlm's ``CharTransformer`` (2 layers, width 128, 4 heads, 128 bytes),
batch 8, AdamW lr 1e-3 with gradient clipping at norm 1 (after the hook, as in
``leap.engine.inner.train_task``). Random inputs either way. Plain training and training with ``Leap.update`` are
timed in interleaved blocks (ABBA order, so drifts in machine load hit both alike).
The overhead is the added time after ``backward`` (hook + optimizer step, medians over
blocks) as a fraction of the plain step: forward and backward are identical in both
variants and carry most of the timing noise. As a check, the whole-step ratio (median
over pairs of adjacent blocks, with a bootstrap 95% interval) is printed too.

    python benchmarks/hook_overhead.py [--model convnet|transformer] [--device cpu|cuda] [--steps 50] [--repeats 20]
                                       [--cache-study]
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time

import torch

import leap
from leap.engine.inner import task_loss
from leap.models import CharTransformer, ConvNet


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_block(model, hook, opt, data, device, clip: float = 0.0) -> tuple[float, float]:
    """Seconds per step over one block of steps: the whole step, and the part after
    ``backward`` (hook + clipping + optimizer step + zero_grad), which is where the variants differ."""
    sync(device)
    after_backward = 0.0
    start = time.perf_counter()
    for x, y in data:
        loss = task_loss(model(x), y)
        loss.backward()
        sync(device)
        tail = time.perf_counter()
        if hook is not None:
            hook(loss, model)
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        opt.zero_grad()
        sync(device)
        after_backward += time.perf_counter() - tail
    return (time.perf_counter() - start) / len(data), after_backward / len(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("convnet", "transformer"), default="convnet")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=50, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=20, help="blocks per variant")
    parser.add_argument("--floor", action="store_true",
                        help="also time hooks that only copy θ_i and ∇f(θ_i) (a lower bound for eq. 8)")
    parser.add_argument("--cache-study", action="store_true",
                        help="also time one update alone: caches warm, evicted, and right after forward+backward")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    if args.model == "transformer":
        model = CharTransformer(width=128, layers=2, heads=4, context=128).to(device)
        opt, clip = torch.optim.AdamW(model.parameters(), lr=1e-3), 1.0
        text = [torch.randint(0, 256, (8, 129), device=device) for _ in range(args.steps)]
        data = [(t[:, :-1], t[:, 1:]) for t in text]
    else:
        model = ConvNet().to(device)
        opt, clip = torch.optim.SGD(model.parameters(), lr=0.1), 0.0
        data = [(torch.rand(20, 1, 28, 28, device=device), torch.randint(20, (20,), device=device))
                for _ in range(args.steps)]
    learner = leap.Leap(model, metric="length", loss_in_manifold=True, stabilizer=True)
    learner.init_task()
    learner.to(model)
    hooks = {"plain": None, "Leap.update": learner.update}
    if args.floor:
        hooks.update(floor_hooks(model))
    for hook in hooks.values():  # warm-up
        time_block(model, hook, opt, data[:5], device, clip)
    steps: dict[str, list[float]] = {name: [] for name in hooks}
    tails: dict[str, list[float]] = {name: [] for name in hooks}
    ratios = []
    for repeat in range(args.repeats):
        # ABBA order: a drift in machine speed within a round hits every variant alike
        order = list(hooks) if repeat % 2 == 0 else list(reversed(hooks))
        for name in order:
            step, tail = time_block(model, hooks[name], opt, data, device, clip)
            steps[name].append(step)
            tails[name].append(tail)
        ratios.append(steps["Leap.update"][-1] / steps["plain"][-1])
    p = statistics.median(steps["plain"])
    low, high = bootstrap_median_interval(ratios)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    print(f"device: {device} ({where}); torch {torch.__version__}")
    print(f"model: {args.model}; optimizer: {type(opt).__name__}{f', clipping at {clip:g}' if clip else ''}")
    print(f"plain step:          {1000 * p:.3f} ms (median of {args.repeats} blocks of {args.steps})")
    print(f"with Leap.update:    {1000 * statistics.median(steps['Leap.update']):.3f} ms")
    # Forward and backward are the same in every variant and carry most of the noise, so
    # the added cost is measured where the variants differ: after backward.
    plain_tail = statistics.median(tails["plain"])
    for name in hooks:
        tail = statistics.median(tails[name])
        extra = tail - plain_tail
        added = "" if name == "plain" else f", {1000 * extra:+.3f} ms = {100 * extra / p:+.2f} % of a step"
        print(f"after backward, {name + ':':22s} {1000 * tail:.3f} ms{added}")
    added = statistics.median(tails["Leap.update"]) - plain_tail
    print(f"hook overhead:       {100 * added / p:+.2f} % of a step (the added time after backward)")
    print(f"whole-step check:    {100 * (statistics.median(ratios) - 1):+.2f} % (median over the {args.repeats} "
          f"rounds; 95% bootstrap interval {100 * (low - 1):+.2f} % to {100 * (high - 1):+.2f} %)")
    if args.cache_study:
        cache_study(model, learner, data, device)


def floor_hooks(model: torch.nn.Module) -> dict:
    """Hooks that only keep the previous point: θ_i and ∇f(θ_i), or θ_i alone, copied
    with one ``_foreach_copy_`` into packed buffers as ``Leap.update`` does."""
    params = list(model.parameters())
    theta, grads = leap.learners.base.Packed(params), leap.learners.base.Packed(params)

    @torch.no_grad()
    def copy_theta_and_grad(loss, model):
        theta.load_(params)
        grads.load_([q.grad for q in params])

    @torch.no_grad()
    def copy_theta(loss, model):
        theta.load_(params)

    return {"copy θ_i and ∇f(θ_i)": copy_theta_and_grad, "copy θ_i": copy_theta}

def cache_study(model, learner, data, device, calls: int = 60) -> None:
    """Median time of one ``update`` alone, by the state of the caches before it."""
    x, y = data[0]
    evict = torch.empty(16_000_000, device=device)  # 64 MB written between calls

    def forward_backward():
        model.zero_grad()
        loss = task_loss(model(x), y)
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
