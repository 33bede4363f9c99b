"""Time per Omniglot meta-step, sequential against batched (not a test: a measurement).

One meta-step = T tasks x K inner steps, batch B, minibatch sampling and augmentation
included, then the meta-update. Variants, each in its own process (so that peak memory
and compile caches are its own):

- ``plain``: plain sequential PyTorch training of the T tasks, no meta-learner (the
  floor of any sequential implementation);
- ``sequential``: the project's Leap meta-step with the sequential engine (hook);
- ``batched``: the same meta-step with the batched engine, eager;
- ``compiled``: the batched engine with ``torch.compile``.

Reported: median ms per meta-step over ``--repeats`` timed meta-steps (after
``--warmup`` untimed ones, which absorb compilation) and peak memory (CUDA:
``torch.cuda.max_memory_allocated``; CPU: the process's peak resident set).

    python benchmarks/meta_step.py --device cuda [--data-dir DIR]     # 20 tasks x 100 steps, batch 20
    python benchmarks/meta_step.py --quick                            # CPU: 4 tasks x 10 steps

Without ``--data-dir`` the tasks are random 28x28 images with Omniglot's shapes (20
classes, 300 training and 100 test images per task); the output says which.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from leap.experiments.config import RunConfig
from leap.experiments.fewshot.trainer import MetaTrainer
from leap.tasks.base import Task
from leap.tasks.builtin import BuiltinBenchmark
from leap.tasks.omniglot import AUGMENTATION, IMAGE_SIZE, NUM_CLASSES, OmniglotBenchmark

VARIANTS = ("plain", "sequential", "batched", "compiled")


class RandomOmniglot:
    """Omniglot's shapes with random pixels: 20-way tasks, 300 training and 100 test
    images (1 x 28 x 28), the ConvNet and appendix D's augmentation."""

    name = "omniglot-random"
    num_classes = NUM_CLASSES

    def __init__(self, device: str) -> None:
        self.device = torch.device(device)

    def make_model(self) -> torch.nn.Module:
        from leap.models import ConvNet

        # The Omniglot default protocol's model: running statistics, batch-norm scales U(0, 1).
        return ConvNet(in_channels=1, num_classes=NUM_CLASSES, image_size=IMAGE_SIZE, running_stats=True,
                       bn_weight_init="uniform").to(self.device)

    def num_sources(self, split: str) -> int:
        return 25

    def task(self, split: str, source: int, generator: torch.Generator, task_seed: int = 0) -> Task:
        x = torch.rand(400, 1, IMAGE_SIZE, IMAGE_SIZE, generator=generator).to(self.device)
        y = torch.arange(NUM_CLASSES, device=self.device)
        augment = AUGMENTATION["released"]
        return Task(f"random-{source}", x[:300], y.repeat_interleave(15), augment(x[300:], generator),
                    y.repeat_interleave(5), NUM_CLASSES, augment=augment, source=source)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_meta_step(trainer: MetaTrainer, init: dict[str, torch.Tensor]) -> None:
    """The T tasks trained one after another by the plainest PyTorch loop."""
    model, loop = trainer.model, trainer.loop
    for task, generator in trainer.draw_tasks(trainer.step_count):
        model.load_state_dict(init)
        opt = loop.make_optimizer(model.parameters())
        for _ in range(loop.steps):
            x, y = task.sample(loop.batch_size, generator)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    trainer.step_count += 1


def worker(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    if args.benchmark == "builtin":
        benchmark, data = BuiltinBenchmark(device), "built-in benchmark (MLP)"
    elif args.data_dir:
        benchmark, data = OmniglotBenchmark(args.data_dir, device=device), f"Omniglot from {args.data_dir}"
    else:
        benchmark, data = RandomOmniglot(args.device), "random 28x28 images with Omniglot's shapes"
    engine = "sequential" if args.variant in ("plain", "sequential") else "batched"
    cfg = RunConfig(method="leap", benchmark="builtin" if args.benchmark == "builtin" else "omniglot",
                    meta_batch=args.tasks, task_steps=args.steps, task_batch=args.batch,
                    device=args.device, engine=engine,
                    compile=args.variant == "compiled", val_every=0).resolved()
    trainer = MetaTrainer(cfg, benchmark)
    init = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    def meta_step() -> None:
        if args.variant == "plain":
            plain_meta_step(trainer, init)
        else:
            trainer.step()

    for _ in range(args.warmup):
        meta_step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.repeats):
        sync(device)
        start = time.perf_counter()
        meta_step()
        sync(device)
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        where = torch.cuda.get_device_name(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux
        where = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return {"variant": args.variant, "ms": 1000 * statistics.median(times), "min_ms": 1000 * min(times),
            "peak_mib": peak, "device": f"{device} ({where})", "data": data, "torch": torch.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="CPU-sized: 4 tasks x 10 steps, 3 timed meta-steps")
    parser.add_argument("--benchmark", default="omniglot", choices=["omniglot", "builtin"])
    parser.add_argument("--data-dir", help="Omniglot directory (default: random images of the same shapes)")
    parser.add_argument("--tasks", type=int, help="tasks per meta-step (default 20; quick 4)")
    parser.add_argument("--steps", type=int, help="inner steps per task (default 100; quick 10)")
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--repeats", type=int, help="timed meta-steps (default 5; quick 3)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed meta-steps first (compilation)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant in this process
    args = parser.parse_args()
    args.tasks = args.tasks or (4 if args.quick else 20)
    args.steps = args.steps or (10 if args.quick else 100)
    args.repeats = args.repeats or (3 if args.quick else 5)
    if args.variant:
        print(json.dumps(worker(args)))
        return

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    passthrough = _drop_option(_drop_option(sys.argv[1:], "--variants"), "--json")
    results = []
    for variant in variants:
        cmd = [sys.executable, str(Path(__file__).resolve()), *passthrough, "--variant", variant]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{variant}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(f"{variant:>10}: {r['ms']:9.1f} ms per meta-step (min {r['min_ms']:.1f}), peak {r['peak_mib']:.0f} MiB",
              flush=True)
    if not results:
        sys.exit(1)
    first = results[0]
    print(f"device: {first['device']}; torch {first['torch']}; data: {first['data']}")
    print(f"meta-step: {args.tasks} tasks x {args.steps} steps, batch {args.batch}; "
          f"median of {args.repeats} after {args.warmup} warm-up")
    base = {r["variant"]: r["ms"] for r in results}
    if "sequential" in base:
        for r in results:
            print(f"  {r['variant']:>10}: {base['sequential'] / r['ms']:5.2f}x the sequential Leap meta-step")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k != "variant"},
                                               "results": results}, indent=2))


def _drop_option(cmd: list[str], name: str) -> list[str]:
    """Remove ``name VALUE`` (or ``name=VALUE``) from an argument list."""
    out, skip = [], False
    for item in cmd:
        if skip:
            skip = False
            continue
        if item == name:
            skip = True
            continue
        if item.startswith(name + "="):
            continue
        out.append(item)
    return out


if __name__ == "__main__":
    main()
