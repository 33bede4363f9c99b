"""The experiment registry: which experiment runs each benchmark, with what defaults,
options and commands.

Each experiment package declares itself in its own torch-free ``registration`` module (an
[`Experiment`][leap.experiments.registry.Experiment]: its benchmarks and their defaults,
its methods, its option groups, its commands, its report); ``REGISTRATIONS`` lists those
modules, the one place a new experiment is added. The command line, the run config
([`leap.experiments.config`][leap.experiments.config]) and the thread policy read
everything benchmark-specific from here, so none of them names a benchmark: adding one
touches its experiment's package and its registration.

Functions are named as ``"module:function"`` and imported when they are used: ``leap
--help`` stays torch-free, and an option declared before the registrations are imported
scopes itself with a [`Scope`][leap.experiments.registry.Scope], read on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
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
    """A ``--benchmark`` value.

    ``small_model``: its models are small enough that one intra-op thread is fastest
    ([`leap.util.threads`][leap.util.threads]). ``reads_data``: it reads a dataset
    (``--data-dir``). ``defaults``: the values of the run config's unset fields
    ([`RunConfig.resolved()`][leap.experiments.config.RunConfig.resolved]; empty for an
    experiment with its own config). ``option_defaults``: the defaults of its experiment's
    own options, shown by ``--benchmark NAME --help``. ``legacy_config``: the values a
    config.json written before a field existed had (what such a run did), so that
    resuming it still matches; its ``"extra"`` entry does the same for the experiment's own
    options, key by key. ``batched_engine``: the batched engine can train its model
    (a classifier); ``--engine batched`` is refused otherwise. ``shared_labels``: every
    task's labels mean the same thing (the bytes of a language model), so multi-task
    pretraining trains one head for all tasks and its initialization is evaluated with that
    head; otherwise (an Omniglot alphabet's labels are its own) one head per source, and a
    fresh head on each evaluated task.
    """

    name: str
    small_model: bool = False
    reads_data: bool = False
    batched_engine: bool = True
    shared_labels: bool = False
    defaults: Mapping[str, Any] = field(default_factory=dict)
    option_defaults: Mapping[str, Any] = field(default_factory=dict)
    legacy_config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    """One experiment package.

    ``benchmarks``; ``methods``: what ``--method`` accepts for them; ``commands``: the
    commands it runs (``"module:function"``, taking the parsed arguments, returning the
    exit status) and ``refusals``: for those it does not run, what to use instead (one
    line). ``run_config``: its runs are [`RunConfig`][leap.experiments.config.RunConfig]s
    meta-trained by [`fit`][leap.engine.loop.fit] with the shared options (else it
    declares its own config). ``run_options``: ``"module:ATTR"``, a tuple of
    [`Option`][leap.util.options.Option]s for RunConfig fields only its benchmarks read.
    ``option_groups``: per command, ``"module:function"`` adding its own options to that
    command's parser. ``subcommands``: ``"module:function"`` adding commands of its own to
    ``leap``'s subparsers. ``prepare_config`` (values dict, before the benchmark's defaults
    fill it; returns it) and ``resolve_extra`` (the resolved config; returns its
    ``extra``): ``"module:function"`` hooks of ``RunConfig.resolved()``; ``extra_from_args``:
    ``"module:function"`` reading its own options into ``RunConfig.extra``. ``report``:
    ``"module:function"`` writing its tables for a directory of finished runs (a list of
    paths, empty when there are none of its runs); ``result_files``: the files that make a
    run directory a finished one, named when ``leap report`` finds none. ``sweep_defaults``: ``leap sweep``'s
    ``methods`` and ``seeds`` when not given.
    """

    name: str
    benchmarks: tuple[Benchmark, ...]
    methods: tuple[str, ...]
    commands: Mapping[str, str]
    refusals: Mapping[str, str] = field(default_factory=dict)
    run_config: bool = False
    run_options: str | None = None
    option_groups: Mapping[str, str] = field(default_factory=dict)
    subcommands: str | None = None
    prepare_config: str | None = None
    resolve_extra: str | None = None
    extra_from_args: str | None = None
    report: str | None = None
    result_files: tuple[str, ...] = ()
    sweep_defaults: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)


_experiments: dict[str, Experiment] = {}
_scopes: list[Scope] = []


def reload() -> None:
    """Read the registrations again on next use (e.g. after a test registered one more);
    every [`Scope`][leap.experiments.registry.Scope] is recomputed."""
    _experiments.clear()
    for scope in _scopes:
        scope._names = None


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


def load(target: str) -> Any:
    """What ``"module:attribute"`` names (the module imported now)."""
    module, attribute = target.split(":")
    return getattr(importlib.import_module(module), attribute)


def hook(experiment: Experiment, name: str) -> Callable[..., Any] | None:
    """``experiment``'s hook ``name`` (a ``"module:function"`` field), None when it has none."""
    target = getattr(experiment, name)
    return None if target is None else load(target)


def get_benchmark(name: str) -> Benchmark:
    """The benchmark ``name`` ([`UsageError`][leap.util.errors.UsageError] for an unknown name)."""
    experiment_of(name)
    return benchmarks()[name]


class Scope(Sequence[str]):
    """The names of the benchmarks that satisfy ``predicate(benchmark, experiment)``,
    computed on first use: an [`Option`][leap.util.options.Option]'s ``applies_to`` or
    ``choices``, declared at import time in a module the registrations themselves import."""

    def __init__(self, predicate: Callable[[Benchmark, Experiment], bool], sort: bool = False) -> None:
        self._predicate, self._sort = predicate, sort
        self._names: tuple[str, ...] | None = None
        _scopes.append(self)

    def _resolve(self) -> tuple[str, ...]:
        if self._names is None:
            names = [b.name for e in experiments().values() for b in e.benchmarks if self._predicate(b, e)]
            self._names = tuple(sorted(names) if self._sort else names)
        return self._names

    def __getitem__(self, index: Any) -> Any:
        return self._resolve()[index]

    def __len__(self) -> int:
        return len(self._resolve())

    def __iter__(self) -> Iterator[str]:
        return iter(self._resolve())

    def __contains__(self, name: object) -> bool:
        return name in self._resolve()

    def __eq__(self, other: object) -> bool:
        return tuple(self) == tuple(other) if isinstance(other, Sequence) else NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(self._resolve())


#: Every benchmark, sorted (``--benchmark``'s choices).
ALL = Scope(lambda b, e: True, sort=True)
#: The benchmarks whose runs are RunConfigs trained by ``fit`` with the shared options.
RUN_CONFIG = Scope(lambda b, e: e.run_config)
#: The benchmarks that read a dataset (``--data-dir``).
READS_DATA = Scope(lambda b, e: b.reads_data)


def command(name: str, benchmark: str) -> Callable[[Any], int]:
    """The function that runs command ``name`` for ``benchmark``; a
    [`UsageError`][leap.util.errors.UsageError] with the experiment's advice when its
    experiment does not run that command."""
    experiment = experiment_of(benchmark)
    target = experiment.commands.get(name)
    if target is None:
        advice = experiment.refusals.get(name, "")
        raise UsageError(f"leap {name} does not run --benchmark {benchmark}" + (f"; {advice}" if advice else ""))
    return load(target)
