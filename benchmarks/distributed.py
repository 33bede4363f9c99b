"""Meta-steps per second with 1 and 2 processes, and a projection for a cluster (not a test).

Leap on one experiment (``--experiment``): ``fewshot``, the built-in benchmark or Omniglot
(``--fewshot-benchmark``; length metric, loss in the manifold, stabilizer) with its
budgets, on the task engine ``--engine``; ``rl``, MinAtar games
(``--rl-task-steps`` environment steps per game, A2C with the benchmark's other
settings); ``multicv``, Multi-CV's pool with MNIST held out (``--multicv-data``, each
dataset capped at ``--multicv-cap`` training images, one epoch per task). The meta-batch
is ``--meta-batch`` (default 8, an even split over 2 processes). Each process gets
``--threads`` intra-op threads (default 1) in both settings, so the comparison is one core
per process. The 2-process run starts its workers exactly as torchrun does (RANK,
WORLD_SIZE, MASTER_ADDR/PORT) and goes through the library's own path: the experiment's
trainer and ``leap.engine.loop.meta_step``, with the one all-reduce of ``leap.util.distributed``.

Measured: the median wall time of a meta-step (after one warm-up step) with 1 and 2
processes (and rank 0's CPU time per meta-step, which other processes on the machine
do not inflate), and the median time of one all-reduce of the real buffer (meta-gradient +
valid count + per-task metrics + stop flags) between the 2 local processes. The settings
alternate ``--repeats`` times (so drifts in machine load hit both alike) and the median
over repeats is reported, with the 1-minute load average before and after: on a shared
machine, other processes take cores from the 2-process run.

Projected, for N ranks of the measured kind (one task at a time per rank) and a meta-batch
B, with ring all-reduce over a network of latency α and bandwidth β:

    T(N) = ceil(B / N) · t_task + 2 (N - 1) · α + 2 (N - 1) / N · S / β

t_task is the 1-process meta-step time divided by B (on CPU its CPU time, which is what a
dedicated core would take for a 1-thread process and which other load does not inflate),
S the all-reduce bytes. Task drawing,
the meta-optimizer step and the validation passes are left out (they are small, or
replicated on every rank).

    python benchmarks/distributed.py [--experiment fewshot|rl|multicv] [--device cpu|cuda] [--meta-batch 8]
        [--steps 10] [--repeats 3] [--latency-us 50] [--bandwidth-gbit 10] [--project-batch 8,64]

On a GPU machine ``--device cuda`` uses NCCL, one GPU per process: the 2-process run
needs 2 GPUs and is skipped with fewer.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import time

import torch


def make_trainer(args: argparse.Namespace):  # -> (trainer, per-task metrics in the all-reduce, their dtype)
    """The experiment's trainer for ``args`` (Leap), as ``leap train`` builds it."""
    if args.experiment == "fewshot":
        from leap.experiments.config import RunConfig
        from leap.experiments.fewshot.trainer import MetaTrainer, build_benchmark

        cfg = RunConfig(method="leap", benchmark=args.fewshot_benchmark, meta_batch=args.meta_batch,
                        meta_steps=args.steps + 1, device=args.device, engine=args.engine,
                        data_dir=args.omniglot_data if args.fewshot_benchmark == "omniglot" else None).resolved()
        return MetaTrainer(cfg, build_benchmark(cfg)), 2, torch.float32
    if args.experiment == "rl":
        from leap.experiments.config import RunConfig
        from leap.experiments.rl.meta import RLMetaTrainer

        cfg = RunConfig(benchmark="minatar", method="leap", meta_batch=args.meta_batch, meta_steps=args.steps + 1,
                        task_steps=args.rl_task_steps, device=args.device).resolved()
        return RLMetaTrainer(cfg), 3, torch.float64
    from leap.experiments.multicv.config import MultiCVConfig
    from leap.experiments.multicv.run import MultiCVTrainer

    cfg = MultiCVConfig(held_out="mnist", method="leap", data_dir=args.multicv_data, meta_batch=args.meta_batch,
                        meta_steps=args.steps + 1, sample_cap=args.multicv_cap, test_cap=args.multicv_cap // 4,
                        val_size=args.multicv_cap // 10, device=args.device)
    return MultiCVTrainer(cfg, cfg.benchmark()), 3, torch.float64


def worker(args: argparse.Namespace) -> None:
    """One rank: time meta-steps (and, with several ranks, the all-reduce); rank 0 prints JSON."""
    from leap.engine.loop import meta_step
    from leap.util import distributed

    torch.set_num_threads(args.threads)
    distributed.setup(args.device, timeout_s=600)
    trainer, columns, dtype = make_trainer(args)
    meta_step(trainer)  # warm-up: caches the tasks, first kernels
    times, cpu_times = [], []
    for _ in range(args.steps):
        distributed.barrier()  # every step starts together, as after the previous all-reduce
        start, cpu_start = time.perf_counter(), time.process_time()
        meta_step(trainer)  # the tasks and the meta-update; ends with a host sync
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    theta = trainer.meta_parameters()
    params = sum(p.numel() for p in theta)
    # The buffer step() reduces: meta-gradient, valid count, (B, columns) metrics, 2 stop flags,
    # in the widest dtype among them.
    buffer = torch.zeros(params + 1 + columns * args.meta_batch + 2, dtype=dtype, device=theta[0].device)
    reduce_times = []
    if distributed.active():
        for _ in range(50):
            distributed.barrier()
            start = time.perf_counter()
            distributed.all_reduce_sum([buffer])
            if buffer.is_cuda:
                torch.cuda.synchronize()
            reduce_times.append(time.perf_counter() - start)
    if distributed.is_main():
        print(json.dumps({
            "world": distributed.world_size(), "step_s": statistics.median(times), "step_times": times,
            "cpu_s": statistics.median(cpu_times),
            "allreduce_s": statistics.median(reduce_times) if reduce_times else None,
            "params": params, "allreduce_bytes": buffer.numel() * buffer.element_size(),
            "param_bytes": params * theta[0].element_size(),
        }), flush=True)
    distributed.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(args: argparse.Namespace, world: int) -> dict:
    """Start ``world`` worker processes (as torchrun would) and return rank 0's figures."""
    port = str(free_port())
    command = [sys.executable, __file__, "--worker", "--experiment", args.experiment, "--device", args.device,
               "--meta-batch", str(args.meta_batch), "--steps", str(args.steps), "--threads", str(args.threads),
               "--rl-task-steps", str(args.rl_task_steps), "--multicv-data", args.multicv_data,
               "--multicv-cap", str(args.multicv_cap), "--fewshot-benchmark", args.fewshot_benchmark,
               "--engine", args.engine, "--omniglot-data", args.omniglot_data]
    procs = []
    for rank in range(world):
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        if world > 1:
            env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                       MASTER_PORT=port)
        else:
            env.pop("WORLD_SIZE", None)
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True))
    outputs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a worker failed (exit statuses {[p.returncode for p in procs]})")
    return json.loads(outputs[0].strip().splitlines()[-1])


def project(t_task: float, nbytes: int, batch: int, latency_s: float, bandwidth: float) -> list[tuple]:
    rows = []
    base = batch * t_task
    n = 1
    while n <= max(batch, 1):
        reduce_s = 0.0 if n == 1 else 2 * (n - 1) * latency_s + 2 * (n - 1) / n * nbytes / bandwidth
        step = math.ceil(batch / n) * t_task + reduce_s
        rows.append((n, math.ceil(batch / n), step, reduce_s, base / step, base / step / n))
        n *= 2
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="fewshot", choices=["fewshot", "rl", "multicv"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fewshot-benchmark", default="builtin", choices=["builtin", "omniglot"])
    parser.add_argument("--engine", default="auto", choices=["auto", "batched", "sequential"],
                        help="fewshot: the task engine (auto: batched where it applies)")
    shared = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
    parser.add_argument("--omniglot-data", default=os.path.join(shared, "omniglot"),
                        help="fewshot omniglot: the data directory")
    parser.add_argument("--rl-task-steps", type=int, default=2000, help="rl: environment steps per game")
    parser.add_argument("--multicv-data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                                                "multicv"), help="multicv: the data directory")
    parser.add_argument("--multicv-cap", type=int, default=1000, help="multicv: training images per dataset")
    parser.add_argument("--meta-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed meta-steps per setting")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    parser.add_argument("--repeats", type=int, default=3, help="alternations of the 1- and 2-process runs")
    parser.add_argument("--latency-us", type=float, default=50.0, help="projection: network latency α")
    parser.add_argument("--bandwidth-gbit", type=float, default=10.0, help="projection: network bandwidth β")
    parser.add_argument("--project-batch", default="8,64", help="projection: meta-batch sizes")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    worlds = [1, 2]
    if args.device.startswith("cuda") and torch.cuda.device_count() < 2:
        worlds = [1]
        print("fewer than 2 GPUs: the 2-process run is skipped (NCCL needs one GPU per process)")
    load_before = os.getloadavg()[0]
    runs: dict[int, list[dict]] = {w: [] for w in worlds}
    for _ in range(args.repeats):
        for w in worlds:
            runs[w].append(measure(args, w))
    load_after = os.getloadavg()[0]
    results = {}
    for w, rs in runs.items():
        results[w] = dict(rs[0], step_s=statistics.median(r["step_s"] for r in rs),
                          cpu_s=statistics.median(r["cpu_s"] for r in rs), step_runs=[r["step_s"] for r in rs])
        if w > 1:
            results[w]["allreduce_s"] = statistics.median(r["allreduce_s"] for r in rs)
    one = results[1]
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"machine: {platform.machine()} {where}, {os.cpu_count()} logical CPUs, torch {torch.__version__}; "
          f"device {args.device}, {args.threads} thread(s) per process")
    print(f"model: {one['params']} meta-learned parameters ({one['param_bytes']} bytes); "
          f"all-reduce buffer {one['allreduce_bytes']} bytes")
    what = {"fewshot": f"{args.fewshot_benchmark} benchmark ({args.engine} engine)",
            "rl": f"minatar, {args.rl_task_steps} environment steps per game",
            "multicv": f"multicv (mnist held out), {args.multicv_cap} training images per dataset"}[args.experiment]
    print(f"{what}, leap, meta-batch {args.meta_batch}, {args.steps} timed meta-steps per run, "
          f"{args.repeats} runs per setting; load average {load_before:.1f} before, {load_after:.1f} after\n")
    print("| processes | meta-step (s, median) | meta-steps/s | speed-up | per run (s) | CPU s per step, rank 0 |")
    print("|---|---|---|---|---|---|")
    for w, r in results.items():
        per_run = ", ".join(f"{t:.3f}" for t in r["step_runs"])
        print(f"| {w} | {r['step_s']:.3f} | {1 / r['step_s']:.2f} | {one['step_s'] / r['step_s']:.2f} | {per_run} "
              f"| {r['cpu_s']:.3f} |")
    if 2 in results:
        print(f"\nall-reduce between 2 local processes: {1e3 * results[2]['allreduce_s']:.3f} ms (median of 50)")

    on_cpu = not args.device.startswith("cuda")
    t_task = (one["cpu_s"] if on_cpu else one["step_s"]) / args.meta_batch
    latency, bandwidth = args.latency_us * 1e-6, args.bandwidth_gbit * 1e9 / 8
    print(f"\nprojection: t_task = {1e3 * t_task:.2f} ms ({'CPU' if on_cpu else 'wall'} time), "
          f"S = {one['allreduce_bytes']} bytes, "
          f"α = {args.latency_us:g} µs, β = {args.bandwidth_gbit:g} Gbit/s")
    for batch in (int(b) for b in args.project_batch.split(",") if b.strip()):
        print(f"\nmeta-batch {batch}:\n")
        print("| ranks | tasks/rank | meta-step (s) | of which all-reduce (ms) | speed-up | efficiency |")
        print("|---|---|---|---|---|---|")
        for n, per, step, reduce_s, speedup, eff in project(t_task, one["allreduce_bytes"], batch, latency,
                                                           bandwidth):
            print(f"| {n} | {per} | {step:.3f} | {1e3 * reduce_s:.3f} | {speedup:.2f} | {100 * eff:.0f}% |")


if __name__ == "__main__":
    main()
