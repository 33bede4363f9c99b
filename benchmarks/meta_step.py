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
``--warmup`` untimed ones, which absorb compilation), peak memory (CUDA:
``torch.cuda.max_memory_allocated``; CPU: the process's peak resident set), and the
achieved GFLOP/s of the tasks' forward and backward passes (counted by
``torch.utils.flop_counter``) beside the machine's peak, so the distance to the limit is
visible. The peak is an estimate (CPU: threads x clock x FLOP per cycle from the CPU's
vector units; CUDA: the data sheet's dense figure for known GPUs); ``--peak-gflops``
replaces it. ``--precision`` runs the inner loop in bf16 or tf32 (``leap train
--precision``).

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

from leap.engine.loop import meta_step as whole_meta_step
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


def flops_per_meta_step(trainer: MetaTrainer, precision: str, with_test: bool) -> float:
    """FLOPs of one meta-step's inner loop: T tasks x K steps of forward + backward on a
    batch of B, plus (``with_test``) each task's forward over its test set (counted on
    task 0). The meta-update and Leap's hook are not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    model, loop = trainer.model, trainer.loop
    task, generator = trainer.draw_tasks(0)[0]
    x, y = task.sample(loop.batch_size, generator)
    with FlopCounterMode(display=False) as step, loop.precision_context(x.device):
        F.cross_entropy(model(x), y).backward()
    model.zero_grad()
    with FlopCounterMode(display=False) as test, torch.no_grad(), loop.precision_context(x.device):
        model(task.test_x)
    return trainer.meta_batch * (loop.steps * step.get_total_flops() + with_test * test.get_total_flops())


#: Dense peak TFLOP/s from the data sheets (SXM parts): fp32, tf32, bf16.
GPU_PEAK_TFLOPS = {"H100": (67.0, 495.0, 989.0), "H200": (67.0, 495.0, 989.0), "A100": (19.5, 156.0, 312.0)}


def peak_gflops(device: torch.device, precision: str) -> tuple[float | None, str]:
    """The machine's peak for ``precision`` and how it was estimated (None: unknown)."""
    column = {"fp32": 0, "tf32": 1, "bf16": 2}[precision]
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peaks in GPU_PEAK_TFLOPS.items():
            if key in name:
                return 1000 * peaks[column], f"{name} data sheet, dense {precision}"
        return None, f"{name}: unknown, pass --peak-gflops"
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    mhz = [float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
    flags = next((line.split(":")[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    if not mhz or "fma" not in flags:
        return None, "unknown CPU, pass --peak-gflops"
    # Two 256-bit FMA pipes (16 fp32 FMAs = 32 FLOP per cycle): AVX2 cores and AMD's
    # AVX-512 (double-pumped); avx512_bf16's dot products double that for bf16. Intel
    # cores with two 512-bit FMA units reach twice the fp32 figure: pass --peak-gflops.
    per_cycle = 64 if precision == "bf16" and "avx512_bf16" in flags else 32
    threads = torch.get_num_threads()
    return threads * max(mhz) / 1000 * per_cycle, (
        f"{threads} thread(s) x {max(mhz) / 1000:.2f} GHz x {per_cycle} FLOP/cycle, an estimate")


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
            with loop.precision_context(x.device):
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
                    compile=args.variant == "compiled", val_every=0, precision=args.precision).resolved()
    trainer = MetaTrainer(cfg, benchmark)
    flops = flops_per_meta_step(trainer, args.precision, with_test=args.variant != "plain")  # plain tests nothing
    init = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    def meta_step() -> None:
        if args.variant == "plain":
            plain_meta_step(trainer, init)
        else:
            whole_meta_step(trainer)  # the tasks (trainer.step) and fit's meta-update

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
    peak_flops, peak_note = peak_gflops(device, args.precision)
    if args.peak_gflops:
        peak_flops, peak_note = args.peak_gflops, "given with --peak-gflops"
    return {"variant": args.variant, "ms": 1000 * statistics.median(times), "min_ms": 1000 * min(times),
            "peak_mib": peak, "device": f"{device} ({where})", "data": data, "torch": torch.__version__,
            "gflops": flops / statistics.median(times) / 1e9, "peak_gflops": peak_flops, "peak_note": peak_note,
            "precision": args.precision}


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
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "tf32"],
                        help="arithmetic of the inner loop (leap train --precision)")
    parser.add_argument("--peak-gflops", type=float, help="the machine's peak GFLOP/s (default: an estimate)")
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
        print(f"{variant:>10}: {r['ms']:9.1f} ms per meta-step (min {r['min_ms']:.1f}), peak {r['peak_mib']:.0f} MiB, "
              f"{r['gflops']:.1f} GFLOP/s", flush=True)
    if not results:
        sys.exit(1)
    first = results[0]
    print(f"device: {first['device']}; torch {first['torch']}; data: {first['data']}")
    print(f"meta-step: {args.tasks} tasks x {args.steps} steps, batch {args.batch}, {args.precision}; "
          f"median of {args.repeats} after {args.warmup} warm-up")
    if first["peak_gflops"]:
        best = max(r["gflops"] for r in results)
        print(f"peak: {first['peak_gflops']:.0f} GFLOP/s ({first['peak_note']}); the fastest variant reaches "
              f"{best:.1f} GFLOP/s, {100 * best / first['peak_gflops']:.1f}% of it")
    else:
        print(f"peak: {first['peak_note']}")
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
