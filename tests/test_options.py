"""Options are declared once (leap.util.options.Option): the command line and the configs
read the same type, range and default, so neither can accept what the other refuses."""

from __future__ import annotations

import math

import pytest

from leap.cli import build_parser, main
from leap.experiments import registry
from leap.experiments.config import EXECUTION_OPTIONS, RunConfig, run_options
from leap.experiments.fewshot.options import DOWNLOAD
from leap.experiments.multicv.config import MULTICV_OPTIONS, MultiCVConfig
from leap.experiments.rl.options import RL_OPTIONS
from leap.util.options import Option, boolean

# (flag, bad value, config field, how a config gets the same value)
SAME_RANGE_CASES = [
    ("--meta-steps", "0", "meta_steps", lambda: RunConfig(meta_steps=0).resolved()),
    ("--inner-lr", "inf", "inner_lr", lambda: RunConfig(inner_lr=math.inf).resolved()),
    ("--eval-lr", "nan", "eval_lr", lambda: RunConfig(eval_lr=math.nan).resolved()),
    ("--val-every", "-1", "val_every", lambda: RunConfig(val_every=-1).resolved()),
    ("--seed", "-1", "seed", lambda: RunConfig(seed=-1).resolved()),
    ("--seed", str(2**64), "seed", lambda: RunConfig(seed=2**64).resolved()),
    ("--max-tasks-per-chunk", "0", "max_tasks_per_chunk", lambda: RunConfig(max_tasks_per_chunk=0).resolved()),
]


@pytest.mark.parametrize("flag,value,field,from_config", SAME_RANGE_CASES,
                         ids=[f"{flag}={value}" for flag, value, _, _ in SAME_RANGE_CASES])
def test_a_value_outside_its_range_is_refused_by_the_cli_and_by_the_config_alike(
    tmp_path, capsys, flag, value, field, from_config
):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"leap: error: {flag} must be ") and "\n" not in err
    assert not out.exists()
    with pytest.raises(ValueError, match=f"^{field} must be "):
        from_config()


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["--benchmark", "minatar", "--discount", "2"], "--discount"),
        (["--benchmark", "minatar", "--sticky-action-prob", "1"], "--sticky-action-prob"),
        (["--benchmark", "multicv", "--held-out", "mnist", "--max-epochs", "0"], "--max-epochs"),
        (["--benchmark", "multicv", "--held-out", "mnist", "--patience", "0"], "--patience"),
        (["--checkpoint-every", "-1"], "--checkpoint-every"),
        (["--dist-timeout", "0"], "--dist-timeout"),
    ],
)
def test_each_benchmarks_own_options_are_range_checked_on_the_command_line(tmp_path, capsys, argv, flag):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *argv]) == 2
    assert capsys.readouterr().err.startswith(f"leap: error: {flag} must be ")
    assert not out.exists()


def test_rl_and_multicv_configs_check_the_ranges_their_options_declare():
    with pytest.raises(ValueError, match=r"^discount must be >= 0 and <= 1, got 2"):
        RunConfig(benchmark="minatar", extra={"discount": 2.0}).resolved()
    with pytest.raises(ValueError, match=r"^patience must be a positive integer, got 0"):
        MultiCVConfig(held_out="mnist", patience=0).validate()
    with pytest.raises(ValueError, match=r"^task_epochs must be > 0"):  # declared by --max-epochs
        MultiCVConfig(held_out="mnist", task_epochs=0.0).validate()


def test_every_declared_option_is_a_flag_of_train_with_its_declared_default():
    train = build_parser().command_parsers["train"]
    actions = {a.dest: a for a in train._actions}
    for opt in (*run_options(), *EXECUTION_OPTIONS, DOWNLOAD, *RL_OPTIONS, *MULTICV_OPTIONS):
        assert opt.name in actions, opt.name
        if opt.name == "benchmark":  # the first registered benchmark, which needs no download
            assert actions[opt.name].default == registry.default_benchmark() == "builtin"
            continue
        assert actions[opt.name].default == opt.default, opt.name
        assert actions[opt.name].option is opt


def test_a_list_option_is_parsed_once_and_each_item_checked_against_the_declared_range(capsys):
    from leap.util.options import comma_list

    seeds = Option("seeds", type=comma_list(int), low=0)
    assert comma_list(int)(" 1, 3,") == [1, 3]
    assert seeds.valid([0, 2]) and not seeds.valid([1, -1]) and not seeds.valid([]) and not seeds.valid(1)
    assert main(["sweep", "--seeds", "0,-1", "--out", "x"]) == 2
    assert "--seeds must be a comma-separated list, each an integer >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sweep", "--seeds", "0,x", "--out", "x"])
    assert "comma-separated int values expected, got '0,x' ('x' is not one)" in capsys.readouterr().err


def test_an_option_knows_its_type_range_and_whether_none_is_allowed():
    steps = Option("steps", type=int, low=1)
    assert steps.valid(1) and not steps.valid(0) and not steps.valid(True) and not steps.valid(1.0)
    assert not steps.valid(None)
    assert Option("cap", type=int, low=1, optional=True).valid(None)
    lr = Option("lr", type=float, above=0)
    assert lr.valid(0.1) and lr.valid(1) and not lr.valid(0) and not lr.valid(math.inf) and not lr.valid(math.nan)
    assert Option("flag", type=boolean).valid(False) and not Option("flag", type=boolean).valid(0)
    assert Option("metric", choices=("length", "energy")).valid("energy")
    with pytest.raises(ValueError, match=r"^metric must be one of \['length', 'energy'\], got 'd3'$"):
        Option("metric", choices=("length", "energy")).check("d3")
