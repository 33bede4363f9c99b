"""Reinforcement learning in the experiment registry (torch-free): its benchmarks and commands."""

from __future__ import annotations

from leap.experiments.methods import METHODS
from leap.experiments.registry import Benchmark, Experiment
from leap.experiments.rl.options import RL_BENCHMARKS

COMMANDS = "leap.experiments.rl.commands"
# Agents are small (a few convolutions): one thread is fastest.
EXPERIMENT = Experiment(
    name="rl",
    benchmarks=tuple(Benchmark(name, small_model=True) for name in RL_BENCHMARKS),
    methods=tuple(METHODS),
    commands={"train": f"{COMMANDS}:train_from_args", "evaluate": f"{COMMANDS}:evaluate_from_args"},
    refusals={name: "meta-train with leap train, then compare the encoders with leap rl-eval on the run"
              for name in ("compare", "sweep")},
)
