"""The thread policy under competition: a built-in Leap run alone and beside CPU-bound work.

Times ``leap train`` (built-in benchmark, Leap, a fixed small budget) in a fresh process,
with torch's default thread count (``--threads`` = the machine's cores) and with the
policy's (no option: one thread for this small model), first alone and then while N other
CPU-bound processes (pure-Python loops) run. Prints the median wall time of each case over
the repeats and the slowdown that competition causes.

    python benchmarks/threads.py [--busy 2] [--repeats 3] [--meta-steps 20]

Run it on an otherwise quiet machine: the "alone" rows assume nothing else runs.

``--loop N --data-dir DIR`` measures instead how the free-cores rule (convnets: Omniglot)
sees a loop of N short runs, as a shell loop of experiments makes them: before each run,
the threads the former rule (cores less the 1-minute load average) and the current one
(other processes' CPU time now, from /proc/stat) would give, then the run's wall time with
each rule's count; first on the quiet machine, then beside ``--busy`` CPU-bound processes.

    python benchmarks/threads.py --loop 4 --data-dir ../shared/data/omniglot
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time


def burn() -> None:
    """A CPU-bound process: a Python loop that never sleeps."""
    x = 0
    while True:
        x = (x * 1103515245 + 12345) % 2**31


def time_run(threads: int | None, meta_steps: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "leap", "train", "--method", "leap", "--meta-steps", str(meta_steps),
               "--no-progress", "--out", out]
        if threads is not None:
            cmd += ["--threads", str(threads)]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, capture_output=True)
        return time.perf_counter() - start


def loadavg_rule() -> int:
    """The former rule: the CPUs this process may use less the 1-minute load average."""
    from leap.util.threads import cpus_available

    return max(1, cpus_available() - round(os.getloadavg()[0]))


def omniglot_run(threads: int, data_dir: str) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "leap", "train", "--benchmark", "omniglot", "--data-dir", data_dir,
               "--method", "leap", "--pretrain-tasks", "5", "--meta-steps", "3", "--meta-batch", "2",
               "--task-steps", "20", "--eval-steps", "5", "--val-every", "0", "--no-progress", "--out", out,
               "--threads", str(threads)]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, capture_output=True)
        return time.perf_counter() - start


def loop(runs: int, busy: int, data_dir: str) -> None:
    from leap.util.threads import cpus_free

    omniglot_run(1, data_dir)  # decode the data into the cache first: every timed run reads it
    for load in ("quiet", f"beside {busy} CPU-bound processes"):
        burners = [multiprocessing.Process(target=burn, daemon=True) for _ in range(busy if load != "quiet" else 0)]
        for b in burners:
            b.start()
        time.sleep(1.0 if burners else 0.0)
        try:
            for rule, choose in (("load average (former)", loadavg_rule), ("/proc/stat now (current)", cpus_free)):
                for i in range(1, runs + 1):
                    threads = choose()
                    seconds = omniglot_run(threads, data_dir)
                    print(f"| {load} | {rule} | run {i} | load average {os.getloadavg()[0]:.2f} | {threads} thread(s) "
                          f"| {seconds:.1f} s |", flush=True)
        finally:
            for b in burners:
                b.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--busy", type=int, default=2, help="competing CPU-bound processes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--meta-steps", type=int, default=20)
    parser.add_argument("--loop", type=int, default=0, help="runs of a loop of Omniglot runs (needs --data-dir)")
    parser.add_argument("--data-dir", help="Omniglot's directory, for --loop")
    args = parser.parse_args()
    if args.loop:
        if not args.data_dir:
            parser.error("--loop needs --data-dir")
        loop(args.loop, args.busy, args.data_dir)
        return
    cores = os.cpu_count() or 1
    cases = {f"torch default ({cores} threads)": cores, "thread policy (1 thread)": None}
    results: dict[tuple[str, str], float] = {}
    for load in ("alone", f"beside {args.busy} CPU-bound processes"):
        burners = []
        if load != "alone":
            burners = [multiprocessing.Process(target=burn, daemon=True) for _ in range(args.busy)]
            for b in burners:
                b.start()
            time.sleep(1.0)
        try:
            for name, threads in cases.items():
                times = [time_run(threads, args.meta_steps) for _ in range(args.repeats)]
                results[(name, load)] = statistics.median(times)
                print(f"{name:32s} {load:36s} median {results[(name, load)]:6.2f} s  "
                      f"({', '.join(f'{t:.2f}' for t in times)})", flush=True)
        finally:
            for b in burners:
                b.terminate()
    print()
    busy = f"beside {args.busy} CPU-bound processes"
    for name in cases:
        print(f"{name:32s} slowdown under competition: {results[(name, busy)] / results[(name, 'alone')]:.1f}x")


if __name__ == "__main__":
    main()
