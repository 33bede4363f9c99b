"""Reproduction of issue 18 outside leap: gloo's threads outlive destroy_process_group.

Not a test (the abort it can provoke is rare); docs/distributed.md cites its output.

Each run starts two processes that form a gloo group, all-reduce three times, pass a
barrier, destroy the group and exit 0. With ``--late``, ``torch.distributed.nn.functional``
is imported after ``init_process_group`` (as torch._dynamo's lazy import does in any
program that builds a ``torch.optim`` optimizer after initializing), which binds the
default group into that module's function defaults; without it, before. Each rank prints
the gloo threads still running after ``destroy_process_group``; the parent counts the
ranks that exited with a signal.

    python tests/engine/gloo_exit_repro.py [--late] [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path


def rank_main(late: bool) -> None:
    import torch
    import torch.distributed as dist

    if not late:
        import torch.distributed.nn.functional
    dist.init_process_group("gloo")
    if late:
        import torch.distributed.nn.functional
    x = torch.ones(1000)
    for _ in range(3):
        dist.all_reduce(x)
    dist.barrier()
    dist.destroy_process_group()
    threads = sorted(Path(f"/proc/self/task/{t}/comm").read_text().strip() for t in os.listdir("/proc/self/task"))
    print("gloo threads after destroy:", [t for t in threads if "gloo" in t])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--late", action="store_true", help="import torch.distributed.nn after init_process_group")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank is not None:
        rank_main(args.late)
        return
    signalled, leftover = 0, 0
    for run in range(args.runs):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2",
               "OMP_NUM_THREADS": "1"}
        procs = [subprocess.Popen([sys.executable, __file__, "--rank", str(r), *(["--late"] if args.late else [])],
                                  env={**env, "RANK": str(r)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for r in range(2)]
        for rank, proc in enumerate(procs):
            out, _ = proc.communicate(timeout=120)
            leftover += "gloo threads after destroy: []" not in out
            if proc.returncode < 0:
                signalled += 1
                print(f"run {run} rank {rank}: killed by signal {-proc.returncode}: {out.strip()[-200:]}")
        if run == 0:
            print(out.strip().splitlines()[-1] if out.strip() else "(no output)")
    ranks = 2 * args.runs
    print(f"{'late' if args.late else 'early'} import: {leftover} of {ranks} ranks had gloo threads left after "
          f"destroy_process_group; {signalled} of {ranks} ranks were killed by a signal")


if __name__ == "__main__":
    main()
