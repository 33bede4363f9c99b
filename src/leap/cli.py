"""Command line: ``leap train | evaluate | compare | sweep | report | ...`` (also ``python -m leap``).

Thin: it builds the parser from the options the experiments declare, sends each command
to the experiment that registered the benchmark
([`leap.experiments.registry`][leap.experiments.registry]; the analyses are commands of
their own) and turns the error policy
of [`leap.util.errors`][leap.util.errors] into exit codes: bad input exits 2 with one line on stderr.

Imports no torch, numpy or safetensors: the parser is built from torch-free declarations
and a command's implementation is imported when it runs, so ``--help`` and usage errors
answer at once (tests/test_cli_startup.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import faulthandler
import importlib.util
import itertools
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

from leap.engine.rundir import check_output_dir, lock
from leap.experiments import registry
from leap.experiments.analysis import ablation, jacobian, write_analysis_report
from leap.experiments.config import (
    EXECUTION_FIELDS,
    RUN_FIELDS,
    SEEDS,
    THREADS,
    add_dist_options,
    add_engine_options,
    add_run_options,
)
from leap.util import distributed, tensorboard
from leap.util.errors import CorruptFileError, RunStopped, UsageError, debugging, environment_error
from leap.util.options import Option, check_options_apply, check_parsed, comma_list
from leap.util.threads import thread_policy
from leap.util.version import VERSION

#: Modules a command needs beyond the base install (the ``cli`` extra): figures. An
#: experiment's own command says so with ``set_defaults(needs=...)``.
NEEDS = {c: ("matplotlib",) for c in ("compare", "sweep", "report", "ablation", "jacobian")}

#: Commands whose --out is a directory they create.
OUTPUT_DIR_COMMANDS = ("train", "compare", "sweep", "ablation", "jacobian")

#: Arguments that name a path (attribute -> how the command line spells it).
PATH_ARGUMENTS = {"out": "--out", "run": "RUN", "dir": "DIR", "data_dir": "--data-dir", "cache_dir": "--cache-dir"}

#: ``--out`` of the commands that write a directory.
OUT = Option("out", "output directory", required=True)

#: Commands that run under torchrun (every rank runs them; the others are single-process).
DISTRIBUTED_COMMANDS = ("train", "evaluate")


def cmd_train(args: argparse.Namespace) -> int:
    return registry.command("train", args.benchmark)(args)


def cmd_evaluate(args: argparse.Namespace) -> int:
    run = Path(args.run)
    if run.is_dir() and distributed.launch_rank() == 0:
        # The run's lock before its config and init are read: no train --overwrite can
        # replace the run while its result is computed and written beside it.
        lock(run)
    # A directory without a readable config.json goes to the default experiment, whose
    # evaluation names what is missing.
    return registry.command("evaluate", _benchmark_of(args) or registry.default_benchmark())(args)


def cmd_compare(args: argparse.Namespace) -> int:
    return registry.command("compare", args.benchmark)(args)


def cmd_sweep(args: argparse.Namespace) -> int:
    """The experiment's grid of runs (e.g. methods x pretraining-task counts x seeds), one run
    directory each, finished runs skipped; --methods and --seeds default to the experiment's."""
    sweep = registry.command("sweep", args.benchmark)
    defaults = registry.experiment_of(args.benchmark).sweep_defaults
    for name in ("methods", "seeds"):
        if getattr(args, name) is None:
            setattr(args, name, list(defaults[name]))
    return sweep(args)


def cmd_report(args: argparse.Namespace) -> int:
    """The analyses' report of a directory they wrote, else every experiment's report of
    the finished runs it finds there."""
    out = Path(args.dir)
    if not out.is_dir():
        raise UsageError(f"{out}: no such directory")
    try:
        paths = write_analysis_report(out)
        if not paths:
            writers = (registry.hook(e, "report") for e in registry.experiments().values())
            paths = [path for write in writers if write is not None for path in write(out)]
    except CorruptFileError as err:  # a damaged record, named
        raise UsageError(str(err)) from err
    if not paths:
        files = [f for e in registry.experiments().values() for f in e.result_files]
        raise UsageError(f"{out}: no finished runs ({', '.join(files[:-1])} or {files[-1]} beside config.json) found")
    for path in paths:
        print(f"wrote {path}")
    return 0


def _benchmark_of(args: argparse.Namespace) -> str | None:
    """The benchmark a command runs: its --benchmark, or the run's (None: unknown)."""
    if getattr(args, "benchmark", None) is not None:
        return args.benchmark
    run = getattr(args, "run", None)
    if run is not None:
        config = (Path(run) if Path(run).is_dir() else Path(run).parent) / "config.json"
        try:
            return json.loads(config.read_text()).get("benchmark")
        except (OSError, ValueError, AttributeError):
            return None
    return None


def _only_for() -> str:
    """``--method``'s help: each method that only some benchmarks run, and which."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for method in registry.methods():
        where = tuple(b for e in registry.experiments().values() if method in e.methods
                      for b in registry.benchmarks_of(e.name))
        if len(where) < len(registry.benchmarks()):
            groups.setdefault(where, []).append(method)
    return "; ".join(f"{', '.join(methods)}: --benchmark {'|'.join(where)} only" for where, methods in groups.items())


def _sweep_default(name: str) -> str:
    """``leap sweep``'s default ``name`` (methods, seeds) per experiment, for the help."""
    return "; ".join(f"{','.join(map(str, e.sweep_defaults[name]))} for {'|'.join(registry.benchmarks_of(e.name))}"
                     for e in registry.experiments().values() if name in e.sweep_defaults)


class HelpWithDefaults(argparse.HelpFormatter):
    """``--help`` shows each option's default (unless its help already says it, or the
    default is unset: then the benchmark's or the run's own value applies)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default is argparse.SUPPRESS
        if not action.option_strings or "default" in text or unset:
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class OneLineErrors(argparse.ArgumentParser):
    """A usage error is one line and a pointer to ``--help`` (not the whole usage), with a
    "did you mean" for a near miss among an option's choices."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"leap: error: {message} (see '{self.prog} --help')\n")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in action.choices], n=1)
            if close:
                raise argparse.ArgumentError(action, f"invalid choice: {value!r} (did you mean {close[0]!r}?)")
        super()._check_value(action, value)


class CommandParser(OneLineErrors):
    """A subcommand's parser: options must be spelled out in full (so that
    ``check_options_apply`` sees each one), and ``--help`` shows defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpWithDefaults)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(prog="leap", description="Meta-learn initializations with Leap (ICLR 2019).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)

    p = sub.add_parser("train", help="meta-train one method, write init.safetensors")
    Option("method", _only_for(), default="leap", choices=registry.methods()).add_to(p)
    OUT.add_to(p)
    add_run_options(p, "train")
    add_dist_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="train held-out tasks from a learned initialization")
    Option("run", "run directory (or its init.safetensors)", flag="run").add_to(p)
    Option("split", "the held-out tasks' split", default="test", choices=("test", "val")).add_to(p)
    for name in ("eval_steps", "seed", "device"):  # default None: the run's own
        dataclasses.replace(RUN_FIELDS[name], default=None, applies_to=None, help=RUN_FIELDS[name].help
                            .replace(" (default: the benchmark's)", "") + " (default: the run's)").add_to(p)
    Option("checkpoint", "evaluate θ0 as it was at this meta-step's checkpoint (writes "
           "eval-SPLIT-step-STEP.json)", int, low=0, optional=True, metavar="STEP").add_to(p)
    add_engine_options(p)
    add_dist_options(p)
    THREADS.add_to(p)
    EXECUTION_FIELDS["no_progress"].add_to(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("sweep", help="methods x pretraining-task counts x seeds, then the report")
    Option("methods", f"comma-separated methods (default: {_sweep_default('methods')})", comma_list()).add_to(p)
    dataclasses.replace(OUT, help="sweep directory (runs go to OUT/METHOD/tasks-N/seed-S)").add_to(p)
    add_run_options(p, "sweep")
    dataclasses.replace(SEEDS, help=f"comma-separated seeds (default: {_sweep_default('seeds')})").add_to(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="tables and figures of a sweep, compare, ablation or jacobian directory")
    Option("dir", "a directory written by sweep, compare, ablation or jacobian", flag="dir").add_to(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="meta-train and evaluate several methods, one table and plot")
    Option("methods", "comma-separated methods", comma_list(), default="leap,reptile,fomaml,none").add_to(p)
    OUT.add_to(p)
    add_run_options(p, "compare")
    p.set_defaults(func=cmd_compare)

    for experiment in registry.experiments().values():  # the experiments' own commands
        subcommands = registry.hook(experiment, "subcommands")
        if subcommands is not None:
            subcommands(sub)

    p = sub.add_parser("ablation", help=ablation.HELP)
    ablation.add_options(p)
    p.set_defaults(func=ablation.cmd_ablation)

    p = sub.add_parser("jacobian", help=jacobian.HELP)
    jacobian.add_options(p)
    p.set_defaults(func=jacobian.cmd_jacobian)
    parser.command_parsers = dict(sub.choices)  # type: ignore[attr-defined]  (main checks options per command)
    return parser


def focus_help(parser: argparse.ArgumentParser, benchmark: str) -> None:
    """``leap COMMAND --benchmark NAME --help``: hide the options that do not apply to NAME
    and show that benchmark's own default where an option's help says "the benchmark's"."""
    known = registry.benchmarks().get(benchmark)
    defaults = {**known.defaults, **known.option_defaults} if known is not None else {}
    for action in parser._actions:
        option = getattr(action, "option", None)
        if option is None or action.help in (None, argparse.SUPPRESS):
            continue
        if option.applies_to is not None and benchmark not in option.applies_to:
            action.help = argparse.SUPPRESS
        elif option.name in defaults and "the benchmark's" in action.help:
            value = defaults[option.name]
            shown = ",".join(value) if isinstance(value, list) else value
            action.help = action.help.replace("the benchmark's", f"{shown} for {benchmark}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in parser.command_parsers and {"-h", "--help"} & set(argv):  # type: ignore[attr-defined]
        benchmark = next((value for flag, value in itertools.pairwise(argv) if flag == "--benchmark"), None)
        if benchmark is not None:
            focus_help(parser.command_parsers[argv[0]], benchmark)  # type: ignore[attr-defined]
    args = parser.parse_args(argv)
    if distributed.launched():
        # A rank killed by a signal (e.g. SIGABRT from a native library) then leaves the
        # Python stacks of all its threads on stderr, so the failure can be diagnosed.
        faulthandler.enable()
    try:
        if distributed.launched() and args.command not in DISTRIBUTED_COMMANDS:
            raise UsageError(f"{args.command} runs in a single process; under torchrun use "
                             f"{' or '.join(DISTRIBUTED_COMMANDS)}")
        command = parser.command_parsers[args.command]  # type: ignore[attr-defined]
        for name, flag in PATH_ARGUMENTS.items():
            value = getattr(args, name, None)
            if isinstance(value, str) and not value.strip():
                # Path("") is the working directory: an unset variable must not make it the run's.
                raise UsageError(f"{flag}: an empty path (an unset shell variable?); name a directory")
        check_parsed(command, argv[1:], args)  # each value within its declared range
        needs = getattr(args, "needs", NEEDS.get(args.command, ()))
        missing = [m for m in needs if importlib.util.find_spec(m) is None]
        if missing:  # a base install: refuse before training anything whose report cannot be written
            raise UsageError(f"leap {args.command} needs {', '.join(missing)}: pip install 'leap-metalearning[cli]' "
                             "(from a checkout: pip install '.[cli]')")
        if getattr(args, "tensorboard", False):
            tensorboard.require()
        if args.command in OUTPUT_DIR_COMMANDS:
            check_output_dir(Path(args.out))  # before any work, whatever the command does first
        elif getattr(args, "out_is_file", False) and args.out:  # an experiment's command writing one file
            if Path(args.out).is_dir():
                raise UsageError(f"--out {args.out}: a directory; {args.command}'s --out names the result file")
            check_output_dir(Path(args.out).parent)
        if getattr(args, "benchmark", None) is not None:
            # An option that does not apply to the chosen benchmark is refused, not ignored.
            check_options_apply(command, argv[1:], args.benchmark)
        with thread_policy(getattr(args, "threads", None), registry.small_model(_benchmark_of(args))):
            code = args.func(args)
        # Leave together: a rank that tears its process group down while a peer is still
        # finishing its last collective makes gloo abort that peer (SIGABRT at exit).
        distributed.barrier()
        return code
    except UsageError as err:
        if debugging():
            raise
        print(f"{distributed.prefix()}leap: error: {err}", file=sys.stderr)
        return 2
    except RunStopped as err:
        print(f"{distributed.prefix()}leap: {err}", file=sys.stderr)
        return err.exit_code
    except distributed.DistributedError as err:
        print(f"leap: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("leap: interrupted", file=sys.stderr)
        return 130
    except (OSError, MemoryError, RuntimeError) as err:
        known = environment_error(err)  # a full disk, a read-only file system, memory, a wrong path
        if known is None or debugging():
            raise
        print(f"{distributed.prefix()}leap: error: {known[1]}", file=sys.stderr)
        return known[0]
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
