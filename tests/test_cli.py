"""The command line: outputs of train/evaluate/compare, and bad input (exit 2, one line, nothing written)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from leap.cli import main

TINY = ["--meta-steps", "2", "--meta-batch", "2", "--task-steps", "3", "--eval-steps", "3", "--no-progress"]


def test_train_writes_init_config_and_metrics(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--method", "leap", "--out", str(out), *TINY]) == 0
    init = load_file(str(out / "init.safetensors"))
    assert "head.weight" in init and init["head.weight"].shape == (5, 64)
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == "leap" and config["meta_steps"] == 2
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    # the process's peak memory so far, after every meta-step: never falls, and at least what it holds now
    from leap.engine.memory import peak_resident_mib

    peaks = [r["peak_resident_mib"] for r in records]
    assert 0 < peaks[0] <= peaks[1] <= peak_resident_mib() + 0.05  # the records round to 0.1 MiB


def test_same_seed_gives_identical_init(tmp_path):
    for name in ("a", "b"):
        assert main(["train", "--method", "reptile", "--out", str(tmp_path / name), *TINY]) == 0
    a, b = (load_file(str(tmp_path / n / "init.safetensors")) for n in ("a", "b"))
    assert all((a[k] == b[k]).all() for k in a)


def test_evaluate_reports_test_error_and_auc(tmp_path, capsys):
    out = tmp_path / "run"
    main(["train", "--method", "fomaml", "--out", str(out), *TINY])
    assert main(["evaluate", str(out)]) == 0
    result = json.loads((out / "eval-test.json").read_text())
    assert len(result["test_errors"]) == 10 and len(result["curve"]) == 3
    assert 0.0 <= result["test_error"] <= 1.0
    assert "test error" in capsys.readouterr().out


def test_evaluate_shows_its_progress_over_the_tasks_unless_told_not_to(tmp_path, capsys):
    out = tmp_path / "run"
    main(["train", "--method", "reptile", "--out", str(out), *TINY])
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    err = capsys.readouterr().err
    assert "reptile: evaluate (test tasks)" in err and "10/10" in err
    assert main(["evaluate", str(out), "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


def test_compare_writes_table_and_plot(tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", "--methods", "leap,reptile,fomaml,maml,finetune,none", "--out", str(out), *TINY]) == 0
    table = (out / "results.md").read_text()
    for label in ("Leap", "Reptile", "FOMAML", "MAML", "Finetuning", "No pretraining"):
        assert f"| {label}" in table
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--method", "nope"], "invalid choice: 'nope'"),
        (["--benchmark", "imagenet"], "invalid choice: 'imagenet'"),
        (["--meta-steps", "0"], "--meta-steps must be a positive integer"),
        (["--meta-batch", "-3"], "--meta-batch must be a positive integer"),
        (["--inner-lr", "0"], "--inner-lr must be > 0"),
        (["--meta-lr", "-1"], "--meta-lr must be > 0"),
        (["--pretrain-tasks", "500"], "--pretrain-tasks 500"),
        (["--device", "cuda:7"], "--device cuda:7"),
        (["--device", "tpu"], "--device tpu"),
        (["--stabilizer", "maybe"], "expected true/false"),
        (["--task-batch", "1000000000"], "--task-batch 1000000000, --eval-batch 20 needs about"),
        (["--engine", "batched", "--meta-batch", "100000000"], "with 100000000 tasks at once needs about"),
    ],
)
def test_invalid_input_exits_2_with_one_line_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "leap", "train", "--out", str(out), *TINY, *args],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "command,args,option",
    [
        ("train", ["--benchmark", "builtin", "--held-out", "mnist"], "--held-out"),
        ("train", ["--benchmark", "builtin", "--data-dir", "."], "--data-dir"),
        ("train", ["--benchmark", "builtin", "--pipeline", "smooth"], "--pipeline"),
        ("train", ["--benchmark", "builtin", "--games", "breakout"], "--games"),
        ("train", ["--benchmark", "multicv", "--held-out", "mnist", "--task-steps", "5"], "--task-steps"),
        ("train", ["--benchmark", "multicv", "--held-out", "mnist", "--engine", "batched"], "--engine"),
        ("train", ["--benchmark", "multicv", "--held-out", "mnist", "--stabilizer=false"], "--stabilizer"),
        ("train", ["--benchmark", "minatar", "--maml-steps", "3"], "--maml-steps"),
        ("compare", ["--benchmark", "builtin", "--bn-eval", "batch"], "--bn-eval"),
        ("sweep", ["--benchmark", "multicv", "--pretrain-tasks", "5"], "--pretrain-tasks"),
    ],
)
def test_an_option_that_does_not_apply_to_the_benchmark_is_refused(tmp_path, capsys, command, args, option):
    out = tmp_path / "run"
    assert main([command, "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"leap: error: {option} does not apply to --benchmark"), err
    assert not out.exists()


def test_options_must_be_spelled_out_so_none_slips_past_the_check(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "leap", "train", "--out", str(tmp_path / "run"), "--held", "x"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unrecognized arguments: --held" in proc.stderr


def test_output_directory_of_another_run_is_refused_without_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY]) == 0
    assert main(["train", "--out", str(out), "--seed", "1", *TINY]) == 2
    assert "holds a different run" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--seed", "1", "--overwrite", *TINY]) == 0


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # undo the line wrapping
    assert "seed of everything random in the run (default: 0)" in text
    assert "(default: 10)" in text  # --max-failed-steps
    assert "meta-training steps (default: the benchmark's)" in text


def test_help_for_one_benchmark_shows_its_options_with_their_values(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--benchmark", "omniglot", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "meta-training steps (default: 1000 for omniglot)" in text
    assert "--pipeline" in text and "--games" not in text and "--held-out" not in text
    with pytest.raises(SystemExit):
        main(["train", "--benchmark", "minatar", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--games" in text and "--pipeline" not in text and "(default: 20 for minatar)" in text


def test_the_peak_memory_a_run_records_starts_again_with_each_run():
    # leap sweep runs many runs in one process; each run's records must not carry the peak
    # of an earlier, larger one (fit resets it as a run starts, where the OS allows)
    import torch

    from leap.engine.memory import peak_resident_mib, reset_peak_resident

    if not reset_peak_resident():
        pytest.skip("this OS does not let a process reset its peak memory")
    big = torch.ones(64 * 2**20)  # 256 MiB, touched
    high = peak_resident_mib()
    del big
    reset_peak_resident()
    assert peak_resident_mib() < high - 200
