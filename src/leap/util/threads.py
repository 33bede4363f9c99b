"""The thread policy: how many intra-op threads torch uses for a leap command on a CPU.

torch's default is one thread per physical core. For the small models of the built-in
benchmark and the RL agents that is slower than one thread even on a quiet machine, and on
a shared one it collapses: every parallel region waits for the slowest thread, and a
thread that lost its core to another process stalls them all (docs/benchmarks.md has the
measurements). So a command uses:

1. ``--threads N`` when given;
2. else ``OMP_NUM_THREADS`` (or ``MKL_NUM_THREADS``) when the user set it;
3. else one thread for small models (the built-in benchmark, RL: each benchmark says so in
   the experiment registry, `leap.experiments.registry`);
4. else the cores it can actually get: the CPUs this process may run on
   (``sched_getaffinity``), less those busy with other processes' work right now (their
   CPU time over a short window, read from ``/proc/stat`` for those CPUs, this process's
   own time excluded; elsewhere the 1-minute load average), shared among the torchrun
   processes of this machine; at least one. The load average was the measure before: it
   still counts a command that ended seconds ago, so in a loop of runs every run after the
   first got one core of two (docs/benchmarks.md).

The library (``leap.Leap`` in a user's loop) never changes torch's threads. torch is
imported only to set the count (the command line declares ``--threads`` without it).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from leap.util.errors import UsageError

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


#: How long the CPUs' use is sampled (seconds): long enough for whole clock ticks (10 ms).
SAMPLE_S = 0.2


def _cpu_ticks(cpus: set[int]) -> tuple[int, int] | None:
    """(busy, total) clock ticks of ``cpus`` so far, from /proc/stat; None where there is none."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    busy = total = 0
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
            busy += sum(ticks) - ticks[3] - ticks[4]
            total += sum(ticks)
    return (busy, total) if total else None


def _own_ticks() -> int:
    """This process's CPU time (user + system) in clock ticks."""
    times = os.times()
    return round((times.user + times.system) * os.sysconf("SC_CLK_TCK"))


def cpus_busy(window: float = SAMPLE_S) -> float:
    """CPUs (of this process's affinity mask) busy with other processes' work now: their
    CPU time over ``window`` seconds, less this process's own; where /proc/stat is missing,
    the 1-minute load average."""
    try:
        cpus = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        cpus = set(range(os.cpu_count() or 1))
    before, own = _cpu_ticks(cpus), _own_ticks()
    if before is None:
        try:
            return os.getloadavg()[0]
        except (AttributeError, OSError):
            return 0.0
    time.sleep(window)
    after, own = _cpu_ticks(cpus), _own_ticks() - own
    if after is None or after[1] <= before[1]:
        return 0.0
    busy, total = after[0] - before[0] - own, after[1] - before[1]
    return max(0.0, busy / total * len(cpus))


def cpus_free() -> int:
    """CPUs not busy with other work, shared among this machine's torchrun processes."""
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, (cpus_available() - round(cpus_busy())) // max(1, local_world))


def choose_threads(requested: int | None = None, small_model: bool = False) -> tuple[int, str]:
    """(threads, why) by the policy in the module docstring; ``small_model``: the command's
    models are small enough that one thread is fastest (its benchmark says so in the
    experiment registry, [`leap.experiments.registry`][leap.experiments.registry])."""
    if requested is not None:
        return requested, "--threads"
    env = _env_threads()
    if env is not None:
        return env, "OMP_NUM_THREADS"
    if small_model:
        return 1, "small model"
    return cpus_free(), "free cores"


@contextlib.contextmanager
def thread_policy(requested: int | None = None, small_model: bool = False) -> Iterator[int]:
    """Run a command with [`choose_threads()`][leap.util.threads.choose_threads]'s count; torch's previous count
    comes back
    afterwards (commands also run in-process, from tests and notebooks)."""
    import torch

    threads, _ = choose_threads(requested, small_model)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(previous)
