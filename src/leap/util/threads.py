"""The thread policy: how many intra-op threads torch uses for a leap command on a CPU.

torch's default is one thread per physical core. For the small models of the built-in
benchmark and the RL agents that is slower than one thread even on a quiet machine, and on
a shared one it collapses: every parallel region waits for the slowest thread, and a
thread that lost its core to another process stalls them all (docs/benchmarks.md has the
measurements). So a command uses:

1. ``--threads N`` when given;
2. else ``OMP_NUM_THREADS`` (or ``MKL_NUM_THREADS``) when the user set it;
3. else one thread for small models (the built-in benchmark, RL: :data:`SMALL_MODEL_BENCHMARKS`);
4. else the cores it can actually get: the CPUs this process may run on
   (``sched_getaffinity``), less those busy with other work (the 1-minute load average),
   shared among the torchrun processes of this machine; at least one.

The library (``leap.Leap`` in a user's loop) never changes torch's threads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from leap.util.errors import UsageError

#: Benchmarks whose models are small enough that one thread is fastest.
SMALL_MODEL_BENCHMARKS = ("builtin", "atari", "minatar")


#: The most intra-op threads a command takes: torch's thread pool crashes the process
#: (SIGSEGV) when asked for 100,000.
MAX_THREADS = 1024


def _env_threads() -> int | None:
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            if int(value) > MAX_THREADS:
                raise UsageError(f"{name}={value}: at most {MAX_THREADS} threads")
            return int(value)
    return None


def cpus_available() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpus_free() -> int:
    """CPUs not busy with other work, shared among this machine's torchrun processes."""
    try:
        busy = round(os.getloadavg()[0])
    except (AttributeError, OSError):
        busy = 0
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, (cpus_available() - busy) // max(1, local_world))


def choose_threads(requested: int | None = None, benchmark: str | None = None) -> tuple[int, str]:
    """(threads, why) by the policy in the module docstring."""
    if requested is not None:
        return requested, "--threads"
    env = _env_threads()
    if env is not None:
        return env, "OMP_NUM_THREADS"
    if benchmark in SMALL_MODEL_BENCHMARKS:
        return 1, f"small model ({benchmark})"
    return cpus_free(), "free cores"


@contextlib.contextmanager
def thread_policy(requested: int | None = None, benchmark: str | None = None) -> Iterator[int]:
    """Run a command with :func:`choose_threads`'s count; torch's previous count comes back
    afterwards (commands also run in-process, from tests and notebooks)."""
    threads, _ = choose_threads(requested, benchmark)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(previous)
