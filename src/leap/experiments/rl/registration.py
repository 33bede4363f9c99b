"""Reinforcement learning in the experiment registry (torch-free): its benchmarks, their
defaults, its options and commands."""

from __future__ import annotations

from leap.experiments.registry import Benchmark, Experiment
from leap.experiments.rl.options import EXTRA_DEFAULTS, GENERIC_DEFAULTS, RL_BENCHMARKS, RL_METHODS

COMMANDS = "leap.experiments.rl.commands"
#: What a config.json written before the environment backend was an option ran.
LEGACY_CONFIG = {"extra": {"env_backend": "gymnasium"}}
OPTIONS = "leap.experiments.rl.options"

EXPERIMENT = Experiment(
    name="rl",
    # Agents are small (a few convolutions): one thread is fastest.
    benchmarks=tuple(Benchmark(name, small_model=True, defaults=GENERIC_DEFAULTS[name],
                               option_defaults=EXTRA_DEFAULTS[name], legacy_config=LEGACY_CONFIG)
                     for name in RL_BENCHMARKS),
    methods=RL_METHODS,
    commands={"train": f"{COMMANDS}:train_from_args", "evaluate": f"{COMMANDS}:evaluate_from_args"},
    refusals={name: "meta-train with leap train, then compare the encoders with leap rl-eval on the run"
              for name in ("compare", "sweep")},
    run_config=True,
    # Its options are refused for the other benchmarks, on every command that takes the run options.
    option_groups={command: f"{OPTIONS}:add_rl_options" for command in ("train", "compare", "sweep")},
    subcommands=f"{COMMANDS}:add_rl_eval_parser",
    prepare_config=f"{OPTIONS}:prepare_config",
    resolve_extra=f"{OPTIONS}:resolve_extra",
    extra_from_args=f"{OPTIONS}:extra_from_args",
    report="leap.experiments.rl.report:report_directory",
    result_files=("rl-eval.json", "rl-summary.json"),
)
