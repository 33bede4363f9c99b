"""A registration as a new experiment would write it: one benchmark, its defaults, one
command. tests/test_registry.py registers it to check that nothing else must change."""

from __future__ import annotations

import argparse

from leap.experiments.config import config_from_args
from leap.experiments.registry import Benchmark, Experiment

#: What the last ``leap train --benchmark toy`` resolved.
LAST: dict[str, object] = {}

DEFAULTS = dict(meta_steps=7, meta_batch=2, task_steps=3, task_batch=4, inner_lr=0.2, inner_optimizer="sgd",
                maml_steps=1, pretrain_tasks=5, eval_steps=3, eval_batch=4, eval_lr=0.2, val_every=0,
                metric="length")

EXPERIMENT = Experiment(
    name="toy",
    benchmarks=(Benchmark("toy", small_model=True, defaults=DEFAULTS),),
    methods=("leap", "reptile"),
    commands={"train": "helpers.toy_experiment:train"},
    refusals={"sweep": "the toy experiment has no grid"},
    run_config=True,
)


def train(args: argparse.Namespace) -> int:
    LAST["config"] = config_from_args(args, args.method)
    return 0
