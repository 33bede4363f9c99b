"""``leap train|sweep --benchmark multicv``: options and commands.

Imports no torch: the command line takes the options from here; the commands import the
protocol (``leap.experiments.multicv.run``) when they run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from leap.experiments.config import join_workers
from leap.experiments.multicv.config import FIELD_OPTIONS, MULTICV_OPTIONS, MultiCVConfig
from leap.util import distributed
from leap.util.errors import CorruptFileError, UsageError
from leap.util.options import add_options


# ---------------------------------------------------------------------- command line
def add_multicv_options(p: argparse.ArgumentParser) -> None:
    """Options of ``leap train --benchmark multicv`` that the generic benchmarks lack."""
    add_options(p.add_argument_group("Multi-CV (--benchmark multicv)"), MULTICV_OPTIONS)


def config_from_args(args: argparse.Namespace, held_out: str | None = None, method: str | None = None,
                     seed: int | None = None) -> MultiCVConfig:
    """A run's config from ``leap train``/``leap sweep`` arguments (None = Table 5's value)."""
    values = {field: getattr(args, arg) for field, arg in FIELD_OPTIONS.items() if getattr(args, arg, None) is not None}
    if held_out is None and args.held_out is not None:
        if len(args.held_out) != 1:
            raise ValueError(f"--held-out: leap train evaluates one dataset, got {','.join(args.held_out)} "
                             "(leap sweep --benchmark multicv takes a list)")
        held_out = args.held_out[0]
    cfg = MultiCVConfig(held_out=held_out or "", method=method or args.method, datasets=args.datasets,
                        data_dir=args.data_dir, seed=seed if seed is not None else getattr(args, "seed", 0),
                        device=args.device, **values)
    cfg.validate()
    return cfg


def _log_to_stderr(args: argparse.Namespace) -> Callable[[str], None]:
    def log(msg: str) -> None:
        if not args.no_progress:
            print(f"leap: {msg}", file=sys.stderr)
    return log


INPUT_ERRORS = (ValueError, FileNotFoundError, CorruptFileError, ImportError)

#: Why a method's pretraining cannot be split over torchrun's processes.
UNSPLITTABLE = {"finetune": "--method finetune carries one encoder from task to task",
                "hat": "--method hat trains one network task after task",
                "progressive": "--method progressive grows one network task after task",
                "none": "--method none has no pretraining to split"}


def train_from_args(args: argparse.Namespace) -> int:
    """``leap train --benchmark multicv``: one run into ``--out`` (resumed if it exists
    with the same config). Errors in the input or the data exit with status 2."""
    from leap.experiments.multicv.run import continued_config, run_multicv

    try:
        if not args.held_out:
            raise ValueError("--benchmark multicv needs --held-out NAME (a dataset of the pool)")
        cfg = config_from_args(args)
        # Under torchrun each rank trains a share of each meta-batch (Leap's tasks are independent).
        join_workers(cfg.device, args.dist_timeout, UNSPLITTABLE.get(cfg.method))
        if not args.overwrite:  # perhaps a run continued with another meta learning rate
            cfg = continued_config(cfg, args.out, meta_lr_given=args.meta_lr is not None,
                                   log=lambda msg: print(f"leap: {msg}", file=sys.stderr) if distributed.is_main()
                                   else None)
        result = run_multicv(cfg, args.out, resume=True, overwrite=args.overwrite, cache_dir=args.cache_dir,
                             log=_log_to_stderr(args))
    except INPUT_ERRORS as err:
        raise UsageError(str(err)) from err
    if result is None:  # torchrun's other ranks: rank 0 evaluates and writes
        return 0
    print(f"{cfg.held_out}/{cfg.method}: test error {100 * result['test_error']:.1f}%, "
          f"train error {100 * result['train_error']:.1f}%, AUC {100 * result['auc']:.1f}")
    return 0


def sweep_from_args(args: argparse.Namespace) -> int:
    """``leap sweep --benchmark multicv``: held-out datasets (``--held-out A,B``; default
    all) x methods (``--methods``; default all five) x seeds (``--seeds``; default 0)."""
    from leap.experiments.multicv.run import multicv_sweep

    try:
        methods, seeds, held = args.methods, args.seeds, args.held_out
        base = config_from_args(args, held_out=(held or ["-"])[0], method=methods[0] if methods else "leap",
                                seed=seeds[0] if seeds else 0)
        paths = multicv_sweep(args.out, base, held, methods, seeds, cache_dir=args.cache_dir,
                              overwrite=args.overwrite, log=_log_to_stderr(args))
    except INPUT_ERRORS as err:
        raise UsageError(str(err)) from err
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
