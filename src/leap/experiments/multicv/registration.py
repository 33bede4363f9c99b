"""Multi-CV in the experiment registry (torch-free): its benchmark, options and commands.
Its runs have their own config ([`MultiCVConfig`][leap.experiments.multicv.config.MultiCVConfig],
Table 5's defaults)."""

from __future__ import annotations

from leap.experiments.multicv.config import METHODS, TABLE_METHODS
from leap.experiments.registry import Benchmark, Experiment

COMMANDS = "leap.experiments.multicv.commands"

EXPERIMENT = Experiment(
    name="multicv",
    benchmarks=(Benchmark("multicv", reads_data=True),),
    methods=METHODS,
    commands={"train": f"{COMMANDS}:train_from_args", "sweep": f"{COMMANDS}:sweep_from_args"},
    refusals={"compare": "use leap sweep --benchmark multicv [--held-out A,B]",
              "evaluate": "leap train --benchmark multicv evaluates the held-out dataset itself (result.json)"},
    option_groups={command: f"{COMMANDS}:add_multicv_options" for command in ("train", "sweep")},
    report="leap.experiments.multicv.report:write_multicv_report",
    result_files=("result.json",),
    sweep_defaults={"methods": TABLE_METHODS, "seeds": (0,)},
)
