"""leap jacobian: options and the command.

Imports no torch (the command line takes the options from here); the command imports the
study (``leap.experiments.analysis.jacobian.study``) when it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from leap.engine.rundir import check_out_dir
from leap.experiments.analysis.jacobian.protocol import PROTOCOL_OPTIONS, JacobianProtocol
from leap.experiments.config import RUN_FIELDS, THREADS
from leap.util.devices import check_device
from leap.util.errors import CorruptFileError, UsageError
from leap.util.options import Option, comma_list
from leap.util.options import add_options as add_options_of


# ---------------------------------------------------------------------- command line
def add_options(p: argparse.ArgumentParser) -> None:
    """Options of ``leap jacobian``."""
    Option("out", "output directory (jacobian.json, jacobian.md, jacobian.png)", required=True).add_to(p)
    Option("data_dir", "Omniglot directory (default: $LEAP_OMNIGLOT_DIR)").add_to(p)
    Option("synthetic", "random pixels and labels instead of Omniglot (smoke tests; labelled as such)",
           action="store_true").add_to(p)
    add_options_of(p, PROTOCOL_OPTIONS)
    Option("lrs", "comma-separated learning rates", comma_list(float), default="0.01,0.1,0.5").add_to(p)
    Option("chunk", "Jacobian columns per vmapped product (memory)", int, default=32, low=1).add_to(p)
    RUN_FIELDS["device"].add_to(p)
    Option("overwrite", "discard a study with another protocol in --out", action="store_true").add_to(p)
    THREADS.add_to(p)


def cmd_jacobian(args: argparse.Namespace) -> int:
    from leap.experiments.analysis.jacobian.study import STUDY_FILE, SyntheticImages, protocol_matcher, run_study
    from leap.tasks import make_benchmark

    protocol = JacobianProtocol(
        data="synthetic" if args.synthetic else "omniglot", steps=args.steps, every=args.every, lrs=args.lrs,
        tasks=args.tasks, split=args.split, batch=args.batch, seed=args.seed, filters=args.filters,
    )
    try:
        protocol.validate()
    except ValueError as err:
        raise UsageError(str(err)) from err
    if args.synthetic and args.data_dir:
        raise UsageError("--synthetic and --data-dir exclude each other")
    check_device(args.device)
    out = Path(args.out)
    check_out_dir(out, protocol_matcher(protocol), args.overwrite, record=STUDY_FILE)
    if args.overwrite:
        (out / STUDY_FILE).unlink(missing_ok=True)
    if args.synthetic:
        benchmark: Any = SyntheticImages()
    else:
        try:
            # The study's figures (docs/analysis.md) were measured on the smooth pipeline's images.
            benchmark = make_benchmark("omniglot", data_dir=args.data_dir, device="cpu", pipeline="smooth")
        except (FileNotFoundError, CorruptFileError, ValueError) as err:
            raise UsageError(str(err)) from err
    if protocol.tasks > benchmark.num_sources(protocol.split):
        raise UsageError(f"--tasks {protocol.tasks}: split {protocol.split!r} has "
                         f"{benchmark.num_sources(protocol.split)} tasks")
    result = run_study(benchmark, protocol, out, args.device, args.chunk,
                       log=lambda msg: print(f"leap: {msg}", file=sys.stderr))
    print((out / "jacobian.md").read_text(), end="")
    print(f"wrote {out / 'jacobian.json'}, {out / 'jacobian.md'} and {out / 'jacobian.png'} "
          f"({sum(r['seconds'] for r in result['runs']):.0f} s of compute)")
    return 0
