"""The thread policy under competition: a built-in Leap run alone and beside CPU-bound work.

Times ``leap train`` (built-in benchmark, Leap, a fixed small budget) in a fresh process,
with torch's default thread count (``--threads`` = the machine's cores) and with the
policy's (no option: one thread for this small model), first alone and then while N other
CPU-bound processes (pure-Python loops) run. Prints the median wall time of each case over
the repeats and the slowdown that competition causes.

    python benchmarks/threads.py [--busy 2] [--repeats 3] [--meta-steps 20]

Run it on an otherwise quiet machine: the "alone" rows assume nothing else runs.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--busy", type=int, default=2, help="competing CPU-bound processes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--meta-steps", type=int, default=20)
    args = parser.parse_args()
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
