"""Task families (benchmarks), looked up by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from leap.tasks.base import Benchmark, Task
from leap.tasks.builtin import BuiltinBenchmark
from leap.tasks.omniglot import OmniglotBenchmark

_REGISTRY: dict[str, Callable[..., Benchmark]] = {"builtin": BuiltinBenchmark, "omniglot": OmniglotBenchmark}


def benchmark_names() -> list[str]:
    return sorted(_REGISTRY)


def make_benchmark(name: str, **kwargs: Any) -> Benchmark:
    """Build benchmark ``name``; kwargs (device, data_dir, ...) go to its constructor."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown benchmark {name!r}; choose from {benchmark_names()}")
    return _REGISTRY[name](**kwargs)


__all__ = [
    "Benchmark", "BuiltinBenchmark", "OmniglotBenchmark", "Task", "benchmark_names", "make_benchmark",
]
