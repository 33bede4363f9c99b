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
    assert set(names) == {"builtin", "omniglot", "charlm", "minatar", "atari", "multicv"}
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


@pytest.fixture
def toy_registered(monkeypatch):
    """One more experiment, registered as a new one would be (tests/helpers/toy_experiment.py)."""
    monkeypatch.setattr(registry, "REGISTRATIONS", (*registry.REGISTRATIONS, "helpers.toy_experiment"))
    registry.reload()
    yield
    monkeypatch.undo()
    registry.reload()


def test_a_benchmark_added_by_one_registration_runs_with_its_defaults_and_its_scope(toy_registered, tmp_path,
                                                                                     capsys):
    # Nothing in cli.py, experiments/config.py or util/ changes: the registration is enough.
    from helpers.toy_experiment import LAST
    from leap.experiments.config import RunConfig

    assert main(["train", "--benchmark", "toy", "--out", str(tmp_path / "run")]) == 0
    cfg = LAST["config"]
    assert (cfg.benchmark, cfg.meta_steps, cfg.inner_lr, cfg.meta_lr) == ("toy", 7, 0.2, RunConfig().resolved().meta_lr)
    assert main(["train", "--benchmark", "toy", "--meta-steps", "9", "--out", str(tmp_path / "run")]) == 0
    assert LAST["config"].meta_steps == 9
    assert registry.small_model("toy") and "toy" in registry.RUN_CONFIG and "toy" not in registry.READS_DATA
    # Options of other benchmarks are refused for it; a command it does not run says what to do.
    assert main(["train", "--benchmark", "toy", "--pipeline", "smooth", "--out", str(tmp_path / "x")]) == 2
    assert "--pipeline does not apply to --benchmark toy (only to omniglot)" in capsys.readouterr().err
    assert main(["train", "--benchmark", "toy", "--data-dir", "d", "--out", str(tmp_path / "x")]) == 2
    assert "--data-dir does not apply to --benchmark toy" in capsys.readouterr().err
    assert main(["sweep", "--benchmark", "toy", "--out", str(tmp_path / "x")]) == 2
    assert "leap sweep does not run --benchmark toy; the toy experiment has no grid" in capsys.readouterr().err
    with pytest.raises(ValueError, match="pipeline applies to the omniglot benchmark only, not 'toy'"):
        RunConfig(benchmark="toy", pipeline="smooth").resolved()
    with pytest.raises(SystemExit):
        main(["train", "--benchmark", "toy", "--help"])
    assert "meta-training steps (default: 7 for toy)" in " ".join(capsys.readouterr().out.split())
    assert not (tmp_path / "x").exists()


def test_cli_config_and_util_name_no_benchmark():
    # Each benchmark's name, defaults and options live in its experiment's package and registration.
    import re
    from pathlib import Path

    import leap

    src = Path(leap.__file__).parent
    files = [src / "cli.py", src / "experiments" / "config.py", *sorted((src / "util").rglob("*.py"))]
    names = "|".join(registry.benchmarks())
    for path in files:
        found = re.findall(rf"\b({names})\b", path.read_text(), flags=re.IGNORECASE)
        assert not found, f"{path.relative_to(src)} names {sorted(set(found))}"


def test_method_help_says_which_benchmarks_run_each_method_that_not_all_run(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "fomaml, maml: --benchmark builtin|omniglot|charlm only" in text
    assert "hat, progressive: --benchmark multicv only" in text
    assert "reptile: --benchmark builtin|omniglot|charlm|atari|minatar only" in text


def test_a_config_written_before_an_option_existed_matches_only_what_such_a_run_did():
    # config.json files of older versions lack the keys added since: the benchmark's
    # legacy_config says what those runs did (RL: the gymnasium backend, inside "extra";
    # the few-shot benchmarks: no gradient clipping), so they resume, and only as that.
    from leap.experiments.config import RunConfig, run_matcher

    for benchmark in ("minatar", "atari"):
        cfg = RunConfig(benchmark=benchmark).resolved()
        old = cfg.to_dict()
        assert old["extra"].pop("env_backend") == "gymnasium"
        assert run_matcher(cfg)(old) and run_matcher(cfg, extending=True)(old)
    envpool = RunConfig(benchmark="atari", extra={"env_backend": "envpool"}).resolved()
    assert not run_matcher(envpool)(old)
    builtin = RunConfig().resolved()
    old = builtin.to_dict()
    assert old.pop("inner_clip") == 0.0
    assert run_matcher(builtin)(old)
    assert not run_matcher(RunConfig(inner_clip=0.5).resolved())(old)
