"""Multi-CV in the experiment registry (torch-free): its benchmark and commands."""

from __future__ import annotations

from leap.experiments.multicv.config import METHODS
from leap.experiments.registry import Benchmark, Experiment

COMMANDS = "leap.experiments.multicv.commands"

EXPERIMENT = Experiment(
    name="multicv",
    benchmarks=(Benchmark("multicv"),),
    methods=METHODS,
    commands={"train": f"{COMMANDS}:train_from_args", "sweep": f"{COMMANDS}:sweep_from_args"},
    refusals={"compare": "use leap sweep --benchmark multicv [--held-out A,B]",
              "evaluate": "leap train --benchmark multicv evaluates the held-out dataset itself (result.json)"},
)
