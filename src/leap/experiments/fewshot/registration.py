"""Few-shot classification in the experiment registry (torch-free): its benchmarks, their
defaults, its options and commands."""

from __future__ import annotations

from leap.experiments.fewshot.options import DEFAULTS, LEGACY, OMNIGLOT_LEGACY
from leap.experiments.methods import METHODS
from leap.experiments.registry import Benchmark, Experiment

COMMANDS = "leap.experiments.fewshot.commands"
OPTIONS = "leap.experiments.fewshot.options"

EXPERIMENT = Experiment(
    name="fewshot",
    benchmarks=(Benchmark("builtin", small_model=True, defaults=DEFAULTS["builtin"], legacy_config=LEGACY),
                Benchmark("omniglot", reads_data=True, defaults=DEFAULTS["omniglot"], legacy_config=OMNIGLOT_LEGACY),
                # the standard library's source: no download; a transformer, trained one task at a
                # time; every task predicts the same 256 bytes
                Benchmark("charlm", defaults=DEFAULTS["charlm"], batched_engine=False, shared_labels=True)),
    methods=tuple(METHODS),
    commands={"train": f"{COMMANDS}:train_from_args", "evaluate": f"{COMMANDS}:evaluate_from_args",
              "compare": f"{COMMANDS}:cmd_compare", "sweep": f"{COMMANDS}:cmd_sweep"},
    run_config=True,
    run_options=f"{OPTIONS}:RUN_OPTIONS",
    option_groups={"train": f"{OPTIONS}:add_run_options", "compare": f"{OPTIONS}:add_run_options",
                   "sweep": f"{OPTIONS}:add_sweep_options"},
    report="leap.experiments.fewshot.report:write_report",
    result_files=("eval-test.json",),
    sweep_defaults={"methods": ("leap", "reptile", "fomaml", "maml", "finetune", "none"), "seeds": (0, 1, 2)},
)
