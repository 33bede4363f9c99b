"""Task families (benchmarks), looked up by name.

The families' modules (torch) are imported when first used: a name below on first
lookup (``leap.util.lazy``), a family when ``make_benchmark`` builds it, so that the
torch-free modules of the package (Omniglot's constants, which the command line offers as
choices) import without them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from leap.util.lazy import lazy_attributes

if TYPE_CHECKING:
    from leap.tasks.base import Benchmark, Task
    from leap.tasks.builtin import BuiltinBenchmark
    from leap.tasks.omniglot import OmniglotBenchmark
    from leap.tasks.text import StdlibTextBenchmark


def _builtin(**kwargs: Any) -> Benchmark:
    from leap.tasks.builtin import BuiltinBenchmark

    return BuiltinBenchmark(**kwargs)


def _omniglot(**kwargs: Any) -> Benchmark:
    from leap.tasks.omniglot import OmniglotBenchmark

    return OmniglotBenchmark(**kwargs)


def _charlm(**kwargs: Any) -> Benchmark:
    from leap.tasks.text import StdlibTextBenchmark

    return StdlibTextBenchmark(**kwargs)


_REGISTRY: dict[str, Callable[..., Benchmark]] = {"builtin": _builtin, "omniglot": _omniglot, "charlm": _charlm}


def benchmark_names() -> list[str]:
    return sorted(_REGISTRY)


def make_benchmark(name: str, **kwargs: Any) -> Benchmark:
    """Build benchmark ``name``; kwargs (device, data_dir, ...) go to its constructor."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown benchmark {name!r}; choose from {benchmark_names()}")
    return _REGISTRY[name](**kwargs)


__all__ = [
    "Benchmark", "BuiltinBenchmark", "OmniglotBenchmark", "StdlibTextBenchmark", "Task", "benchmark_names",
    "make_benchmark",
]
__getattr__, __dir__ = lazy_attributes(__name__, {
    "leap.tasks.base": ("Benchmark", "Task"),
    "leap.tasks.builtin": ("BuiltinBenchmark",),
    "leap.tasks.omniglot": ("OmniglotBenchmark",),
    "leap.tasks.text": ("StdlibTextBenchmark",),
})
