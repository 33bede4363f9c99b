"""Running ``leap`` under torchrun in tests: two ranks started by torchrun or by hand, a
fault injected on one of them, and the comparisons of a run's files across launches."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from leap.engine.loop import MEASURED_KEYS

#: tests/helpers/fault_injection.py: ``leap`` with a fault injected on one rank.
FAULT_INJECTION = Path(__file__).parent / "fault_injection.py"
# A bound on how long a job may take, to tell "ends" from "hangs", not a speed measure:
# generous for a loaded 2-core machine, where starting a process that imports torch takes seconds.
LIMIT_S = 120


def torchrun(*args: str) -> list[str]:
    """torchrun on this machine with two processes (``args``: the program and its arguments)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]


def records(out: Path) -> list[dict]:
    """The run's metrics.jsonl records without their times."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in MEASURED_KEYS} for line in lines]


def assert_same_records(got: list[dict], want: list[dict]) -> None:
    """Metrics records equal up to float rounding: numbers (and lists of numbers) within
    1e-6 or a relative 1e-5 (the norms of θ0 and its meta-gradient are large), NaN
    matching NaN; everything else exactly."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for key, value in w.items():
            numeric = isinstance(value, (int, float)) or (
                isinstance(value, list) and all(isinstance(v, (int, float)) for v in value))
            assert g[key] == (pytest.approx(value, rel=1e-5, abs=1e-6, nan_ok=True) if numeric else value), key


def max_abs_diff(a: Path, b: Path) -> float:
    """The largest difference between two runs' init.safetensors."""
    x, y = load_file(str(a / "init.safetensors")), load_file(str(b / "init.safetensors"))
    assert x.keys() == y.keys()
    return max(float((x[k] - y[k]).abs().max()) for k in x)


def fault_env(kind: str, rank: int = 1, step: int = 2) -> dict[str, str]:
    """The environment that makes fault_injection.py do ``kind`` on ``rank`` before meta-step ``step``."""
    return {**os.environ, "LEAP_FAULT": kind, "LEAP_FAULT_RANK": str(rank), "LEAP_FAULT_STEP": str(step)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], env: dict[str, str]) -> list[subprocess.Popen]:
    """Two ranks started by hand, with the environment torchrun gives its workers. Unlike
    under torchrun, no agent stops the survivors when one rank fails: each rank has to
    end by itself, which is what these tests check."""
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        rank_env = {**env, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                    "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(FAULT_INJECTION), *args], env=rank_env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def finish(procs: list[subprocess.Popen], limit_s: float) -> list[tuple[int, str]]:
    """Each rank's (exit status, stderr) once all have exited; fails if that takes longer than ``limit_s``."""
    deadline = time.monotonic() + limit_s
    try:
        errors = [proc.communicate(timeout=max(0.1, deadline - time.monotonic()))[1] for proc in procs]
    except subprocess.TimeoutExpired:
        stop(procs)
        pytest.fail(f"the ranks did not all exit within {limit_s} s")
    return [(proc.returncode, err) for proc, err in zip(procs, errors, strict=True)]
