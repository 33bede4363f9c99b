"""Cost of the Leap hook per inner step (not a test: a measurement).

Omniglot convnet (4 x [conv 3x3 64, max-pool 2, batch-norm, ReLU] + linear 20), 28x28
inputs, batch 20, SGD lr 0.1. Plain training and training with ``Leap.update`` are
timed in interleaved blocks (so drifts in machine load hit both alike); medians of the
per-step times are reported.

    python benchmarks/hook_overhead.py [--device cpu|cuda] [--steps 50] [--repeats 20]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

import leap
from leap.models import ConvNet


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_block(model, learner, opt, data, device) -> float:
    """Seconds per step over one block of steps."""
    sync(device)
    start = time.perf_counter()
    for x, y in data:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if learner is not None:
            learner.update(loss, model)
        opt.step()
        opt.zero_grad()
    sync(device)
    return (time.perf_counter() - start) / len(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=50, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=20, help="blocks per variant")
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
    plain, hooked = [], []
    for _ in range(args.repeats):
        plain.append(time_block(model, None, opt, data, device))
        hooked.append(time_block(model, learner, opt, data, device))
    p, h = statistics.median(plain), statistics.median(hooked)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    print(f"device: {device} ({where}); torch {torch.__version__}")
    print(f"plain SGD step:      {1000 * p:.3f} ms (median of {args.repeats} blocks of {args.steps})")
    print(f"with Leap.update:    {1000 * h:.3f} ms")
    print(f"hook overhead:       {100 * (h / p - 1):+.1f} %")


if __name__ == "__main__":
    main()
