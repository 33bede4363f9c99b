"""The experiment registry: which experiment runs each benchmark, and which commands it runs.

Each experiment package declares itself in its own torch-free ``registration`` module (an
[`Experiment`][leap.experiments.registry.Experiment]: its benchmarks, methods and commands);
``REGISTRATIONS`` lists those modules, the one place a new experiment is added. The
command line dispatches its commands through here
([`command()`][leap.experiments.registry.command]), so its dispatch names no benchmark.

Commands are named as ``"module:function"`` (the function takes the parsed arguments and
returns the exit status) and imported when they run: ``leap --help`` stays torch-free.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from leap.util.errors import UsageError

#: The registration modules, in the order their benchmarks are listed (the first
#: experiment's first benchmark is the command line's default).
REGISTRATIONS = (
    "leap.experiments.fewshot.registration",
    "leap.experiments.rl.registration",
    "leap.experiments.multicv.registration",
)


@dataclass(frozen=True)
class Benchmark:
    """A ``--benchmark`` value. ``small_model``: its models are small enough that one
    intra-op thread is fastest ([`leap.util.threads`][leap.util.threads])."""

    name: str
    small_model: bool = False


@dataclass(frozen=True)
class Experiment:
    """One experiment package: its benchmarks, the methods ``--method`` accepts for them,
    the commands it runs (``"module:function"``) and, for the commands it does not run,
    what to use instead (one line)."""

    name: str
    benchmarks: tuple[Benchmark, ...]
    methods: tuple[str, ...]
    commands: Mapping[str, str]
    refusals: Mapping[str, str] = field(default_factory=dict)


_experiments: dict[str, Experiment] = {}


def experiments() -> dict[str, Experiment]:
    """Every registered experiment by name (the registrations are imported on first use)."""
    if not _experiments:
        for module in REGISTRATIONS:
            experiment: Experiment = importlib.import_module(module).EXPERIMENT
            _experiments[experiment.name] = experiment
    return _experiments


def benchmarks() -> dict[str, Benchmark]:
    """Every benchmark by name, in registration order."""
    return {b.name: b for e in experiments().values() for b in e.benchmarks}


def experiment_of(benchmark: str) -> Experiment:
    """The experiment that runs ``benchmark`` ([`UsageError`][leap.util.errors.UsageError] for an unknown name)."""
    for experiment in experiments().values():
        if any(b.name == benchmark for b in experiment.benchmarks):
            return experiment
    raise UsageError(f"unknown benchmark {benchmark!r}; choose from {', '.join(benchmarks())}")


def benchmarks_of(experiment: str) -> tuple[str, ...]:
    """The names of ``experiment``'s benchmarks."""
    return tuple(b.name for b in experiments()[experiment].benchmarks)


def default_benchmark() -> str:
    """The benchmark a command runs without ``--benchmark``: the first registered."""
    return next(iter(benchmarks()))


def methods() -> list[str]:
    """Every experiment's methods, each once, in registration order (``--method``'s choices)."""
    return list(dict.fromkeys(m for e in experiments().values() for m in e.methods))


def small_model(benchmark: str | None) -> bool:
    """Whether ``benchmark``'s models are small (False for None or an unknown name)."""
    entry = benchmarks().get(benchmark) if benchmark is not None else None
    return entry is not None and entry.small_model


def command(name: str, benchmark: str) -> Callable[[Any], int]:
    """The function that runs command ``name`` for ``benchmark``; a
    [`UsageError`][leap.util.errors.UsageError] with the experiment's advice when its
    experiment does not run that command."""
    experiment = experiment_of(benchmark)
    target = experiment.commands.get(name)
    if target is None:
        advice = experiment.refusals.get(name, "")
        raise UsageError(f"leap {name} does not run --benchmark {benchmark}" + (f"; {advice}" if advice else ""))
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)
