"""The experiment registry: every benchmark belongs to one experiment, the command line
dispatches through it, and a command an experiment does not run is refused in one line."""

from __future__ import annotations

import pytest

from leap.cli import main
from leap.experiments import registry


def test_every_benchmark_belongs_to_exactly_one_experiment_and_the_first_is_the_default():
    owners = [e.name for e in registry.experiments().values() for _ in e.benchmarks]
    names = [b.name for e in registry.experiments().values() for b in e.benchmarks]
    assert len(names) == len(set(names)) == len(owners)
    assert set(names) == {"builtin", "omniglot", "minatar", "atari", "multicv"}
    assert registry.default_benchmark() == "builtin"
    for name in names:
        assert name in registry.benchmarks_of(registry.experiment_of(name).name)


def test_every_registered_command_imports_and_is_callable():
    for experiment in registry.experiments().values():
        for command in experiment.commands:
            for benchmark in registry.benchmarks_of(experiment.name):
                assert callable(registry.command(command, benchmark))


@pytest.mark.parametrize("argv, message", [
    (["compare", "--benchmark", "multicv", "--out", "OUT"],
     "leap compare does not run --benchmark multicv; use leap sweep --benchmark multicv [--held-out A,B]"),
    (["compare", "--benchmark", "minatar", "--out", "OUT"],
     "leap compare does not run --benchmark minatar; meta-train with leap train, then compare the encoders"),
    (["sweep", "--benchmark", "atari", "--out", "OUT"], "leap sweep does not run --benchmark atari"),
])
def test_a_command_an_experiment_does_not_run_is_refused_in_one_line_before_writing(tmp_path, capsys, argv, message):
    argv = [a.replace("OUT", str(tmp_path / "out")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_evaluate_of_a_multicv_run_says_that_train_evaluates_it(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"benchmark": "multicv", "held_out": "mnist", "method": "leap"}')
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "leap train --benchmark multicv evaluates the held-out dataset itself" in capsys.readouterr().err


def test_an_unknown_benchmark_is_refused_with_the_registered_names():
    with pytest.raises(Exception, match="unknown benchmark 'nope'; choose from builtin, omniglot"):
        registry.experiment_of("nope")
