"""Few-shot classification in the experiment registry (torch-free): its benchmarks and commands."""

from __future__ import annotations

from leap.experiments.methods import METHODS
from leap.experiments.registry import Benchmark, Experiment

COMMANDS = "leap.experiments.fewshot.commands"

EXPERIMENT = Experiment(
    name="fewshot",
    benchmarks=(Benchmark("builtin", small_model=True), Benchmark("omniglot")),
    methods=tuple(METHODS),
    commands={"train": f"{COMMANDS}:train_from_args", "evaluate": f"{COMMANDS}:evaluate_from_args",
              "compare": f"{COMMANDS}:cmd_compare", "sweep": f"{COMMANDS}:cmd_sweep"},
)
