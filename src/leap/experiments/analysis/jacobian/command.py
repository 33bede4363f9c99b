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
from leap.experiments.config import THREADS
from leap.util.devices import check_device
from leap.util.errors import CorruptFileError, UsageError
from leap.util.options import Option
from leap.util.options import add_options as add_options_of


# ---------------------------------------------------------------------- command line
def _lrs(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err


def add_options(p: argparse.ArgumentParser) -> None:
    """Options of ``leap jacobian``."""
    p.add_argument("--out", required=True, help="output directory (jacobian.json, jacobian.md, jacobian.png)")
    p.add_argument("--data-dir", help="Omniglot directory (default: $LEAP_OMNIGLOT_DIR)")
    p.add_argument("--synthetic", action="store_true",
                   help="random pixels and labels instead of Omniglot (smoke tests; labelled as such)")
    add_options_of(p, PROTOCOL_OPTIONS)
    p.add_argument("--lrs", type=_lrs, default=[0.01, 0.1, 0.5], help="comma-separated learning rates")
    Option("chunk", "Jacobian columns per vmapped product (memory)", int, default=32, low=1).add_to(p)
    p.add_argument("--device", default="cpu")
    p.add_argument("--overwrite", action="store_true", help="discard a study with another protocol in --out")
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
