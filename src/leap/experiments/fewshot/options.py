"""Few-shot classification's benchmarks, their defaults and the options only they read.

Imports no torch: the command line and the experiment registry take these declarations
(``leap.experiments.fewshot.registration``); the engine that reads them
is imported when a run starts.

Defaults follow the paper's Table 3 (Omniglot); the built-in benchmark scales budgets
down so that a comparison runs in minutes on 2 cores.
"""

from __future__ import annotations

import argparse
from typing import Any

from leap.engine.precision import PRECISIONS
from leap.tasks.omniglot.constants import BN_EVAL, PIPELINES
from leap.util.options import Option, boolean, comma_list

BENCHMARKS = ("builtin", "omniglot", "charlm")

#: The run config's defaults per benchmark (``None`` fields of RunConfig).
DEFAULTS: dict[str, dict[str, Any]] = {
    "builtin": dict(
        meta_steps=100, meta_batch=5, task_steps=50, task_batch=20, inner_lr=0.1, inner_optimizer="sgd",
        inner_clip=0.0, maml_steps=5, pretrain_tasks=20, eval_steps=50, eval_batch=20, eval_lr=0.1, val_every=0,
        metric="length",
    ),
    "omniglot": dict(
        meta_steps=1000, meta_batch=20, task_steps=100, task_batch=20, inner_lr=0.1, inner_optimizer="sgd",
        inner_clip=0.0, maml_steps=5, pretrain_tasks=25, eval_steps=100, eval_batch=20, eval_lr=0.1, val_every=100,
        metric="length",
        # Omniglot's protocol (leap.tasks.omniglot): the authors' code's image pipeline, and
        # test images classified with the task's running batch-norm statistics.
        pipeline="released", bn_eval="running",
    ),
    # Character-level language modelling on the standard library's packages (leap.tasks.text):
    # long learning processes of a transformer, AdamW with clipping as such models train.
    # No Table 3 here: θ0 is stepped by Adam at 0.01, the project's rule (docs/meta-lr.md).
    # Sized for a comparison of 4 initializations x 3 seeds in about 2 CPU-hours at ~55-70 ms
    # per step (one thread): per seed 3 meta-trainings of 10 x 2 x 500 steps and 4 x 5
    # held-out packages x 500 steps, about 40,000 steps.
    "charlm": dict(
        meta_steps=10, meta_batch=2, task_steps=500, task_batch=8, inner_lr=1e-3, inner_optimizer="adamw",
        inner_clip=1.0, maml_steps=5, pretrain_tasks=12, eval_steps=500, eval_batch=8, eval_lr=1e-3, val_every=0,
        metric="length", meta_optimizer="adam", meta_lr=0.01,
    ),
}

#: What a config.json written before --inner-clip existed ran: no clipping.
LEGACY = {"inner_clip": 0.0}
#: What an Omniglot config.json written before the protocol options existed ran: the
#: smooth pipeline, test-batch statistics.
OMNIGLOT_LEGACY = {**LEGACY, "pipeline": "smooth", "bn_eval": "batch"}

#: RunConfig fields only the few-shot benchmarks read (``None`` defaults: the benchmark's).
RUN_OPTIONS = (
    Option("maml_steps", "MAML's differentiated inner steps in meta-training (default: the benchmark's)", int,
           low=1, applies_to=BENCHMARKS),
    Option("val_every", "validate every M meta-steps (0: never) (default: the benchmark's)", int, low=0,
           applies_to=BENCHMARKS),
    Option("inner_clip", "clip each inner step's gradient to this norm, 0: never (default: the benchmark's)",
           float, low=0, applies_to=BENCHMARKS),
    Option("pipeline", "omniglot: image pipeline; released (default): the authors' code (nearest-neighbour "
           "resize, not inverted, nearest augmentation, batch-norm scales U(0, 1)); smooth: Lanczos, "
           "inverted, bilinear, scales 1", choices=PIPELINES, applies_to=("omniglot",)),
    Option("bn_eval", "omniglot: classify test images with batch norm's running statistics of the task's "
           "training (default, non-transductive) or with the test batch's own (transductive)",
           choices=BN_EVAL, applies_to=("omniglot",)),
    Option("engine", "train a meta-batch's tasks all at once (batched) or one by one (sequential); auto: "
           "batched on CUDA, and on CPU for models whose inner step costs under 10 MFLOP (the built-in "
           "benchmark's); MAML and finetuning always train sequentially", default="auto",
           choices=("auto", "batched", "sequential"), applies_to=BENCHMARKS),
    Option("compile", "batched engine: torch.compile the inner step (default: on for CUDA, off on CPU)", boolean,
           optional=True, applies_to=BENCHMARKS),
    Option("precision", "arithmetic of the tasks' forward and backward passes: fp32, bf16 (autocast; CPU and "
           "CUDA) or tf32 (CUDA); parameters, θ0 and the meta-gradient stay float32", default="fp32",
           choices=PRECISIONS, applies_to=BENCHMARKS),
    Option("max_tasks_per_chunk", "batched engine: most tasks trained at once (default: the whole meta-batch, "
           "halved on CUDA out-of-memory)", int, low=1, optional=True, applies_to=BENCHMARKS),
)

#: Options of a run's execution (not in config.json).
DOWNLOAD = Option("download", "omniglot: fetch the official archives into --data-dir if they are missing",
                  action="store_true", applies_to=("omniglot",))
#: ``leap sweep``'s pretraining-task counts: Table 2's rows (argparse parses the default too).
SWEEP_COUNTS = Option("pretrain_tasks", "comma-separated counts (Table 2's rows)", comma_list(int),
                      default="1,3,5,10,15,20,25", low=1, applies_to=BENCHMARKS)


def add_run_options(p: argparse.ArgumentParser) -> None:
    """``leap train`` and ``leap compare``: --download (the run options come with the shared ones)."""
    DOWNLOAD.add_to(p)


def add_sweep_options(p: argparse.ArgumentParser) -> None:
    """``leap sweep``: --download and the pretraining-task counts."""
    DOWNLOAD.add_to(p)
    SWEEP_COUNTS.add_to(p)
