"""leap sweep (resumable, finished runs skipped) and leap report (Table 2's shape, Figure 3)."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from leap.cli import main
from leap.experiments.config import RunConfig
from leap.experiments.fewshot.report import collect_runs, sweep_table, write_report
from leap.experiments.fewshot.results import stamp
from leap.tasks.omniglot import download_omniglot

BUDGET = ["--meta-steps", "2", "--meta-batch", "2", "--task-steps", "3", "--eval-steps", "4", "--no-progress"]


def sweep(out: Path, *extra: str) -> int:
    return main(["sweep", "--methods", "leap,reptile,none", "--pretrain-tasks", "1,3", "--seeds", "0",
                 "--out", str(out), *BUDGET, *extra])


def test_sweep_writes_one_run_per_method_count_and_seed_and_the_report(tmp_path):
    out = tmp_path / "sweep"
    assert sweep(out) == 0
    runs = collect_runs(out)
    assert sorted((r["method"], r["pretrain_tasks"], r["seed"]) for r in runs) == sorted(
        (m, n, 0) for m in ("leap", "reptile", "none") for n in (1, 3))
    assert (out / "leap" / "tasks-3" / "seed-0" / "init.safetensors").is_file()
    assert (out / "report.md").is_file() and (out / "figure3.png").read_bytes()[:4] == b"\x89PNG"


def test_sweep_skips_finished_runs_and_resumes_an_interrupted_one(tmp_path):
    out = tmp_path / "sweep"
    assert sweep(out) == 0
    finished = out / "reptile" / "tasks-1" / "seed-0"
    before = (finished / "init.safetensors").stat().st_mtime_ns
    interrupted = out / "leap" / "tasks-3" / "seed-0"
    expected = (interrupted / "init.safetensors").read_bytes()
    # What a run killed after its first meta-step leaves behind: config, a checkpoint, metrics.
    (interrupted / "eval-test.json").unlink()
    (interrupted / "init.safetensors").unlink()
    for ckpt in sorted((interrupted / "checkpoints").iterdir())[1:]:
        ckpt.unlink()
    assert sweep(out) == 0
    assert (finished / "init.safetensors").stat().st_mtime_ns == before
    assert (interrupted / "init.safetensors").read_bytes() == expected


def fake_run(root: Path, method: str, n: int, seed: int, test_error: float, auc: float, benchmark="omniglot",
             **config):
    variant = "".join(f"-{v}" for v in config.values())
    run = root / f"{method}{variant}" / f"tasks-{n}" / f"seed-{seed}"
    run.mkdir(parents=True)
    cfg = RunConfig(method=method, benchmark=benchmark, seed=seed, pretrain_tasks=n, **config).resolved()
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    init = f"the init of {run}".encode()  # report reads only its digest
    (run / "init.safetensors").write_bytes(init)
    result = {"test_error": test_error, "test_error_std": 0.0, "auc": auc, "test_errors": [test_error],
              "aucs": [auc], "curve": [auc] * 10}
    (run / "eval-test.json").write_text(json.dumps(stamp(result, cfg, "test", hashlib.sha256(init).hexdigest())))
    return run


def test_report_table_has_counts_as_rows_methods_as_columns_and_mean_std_over_seeds(tmp_path):
    fake_run(tmp_path, "leap", 5, 0, 0.30, 0.5)
    fake_run(tmp_path, "leap", 5, 1, 0.40, 0.6)
    fake_run(tmp_path, "none", 5, 0, 0.80, 0.9)
    fake_run(tmp_path, "leap", 25, 0, 0.20, 0.4)
    table = sweep_table(collect_runs(tmp_path)).splitlines()
    assert table[0] == "| Pretraining tasks | Leap | No pretraining |"
    assert table[2] == "| 5 | 35.0 ± 63.5 (n=2) | 80.0 (n=1) |"  # 95% interval over seeds; none for one seed
    assert table[3] == "| 25 | 20.0 (n=1) | - |"


def test_runs_of_one_method_with_different_configurations_are_never_averaged_as_seeds(tmp_path):
    fake_run(tmp_path, "maml", 20, 0, 0.50, 0.5, meta_steps=300)
    fake_run(tmp_path, "maml", 20, 0, 0.40, 0.5, meta_steps=1300)
    fake_run(tmp_path, "maml", 20, 1, 0.44, 0.5, meta_steps=1300)
    table = sweep_table(collect_runs(tmp_path)).splitlines()
    assert table[0] == "| Pretraining tasks | MAML (meta_steps=1300) | MAML (meta_steps=300) |"
    assert table[2] == "| 20 | 42.0 ± 25.4 (n=2) | 50.0 (n=1) |"


def test_the_report_says_which_methods_ran_which_budget_when_the_budgets_differ(tmp_path):
    # MAML's meta-steps are cheaper, so it runs more of them than the others: its column
    # has no configuration suffix (one configuration per method), so the header says it.
    fake_run(tmp_path, "leap", 20, 0, 0.40, 0.5, meta_steps=300)
    fake_run(tmp_path, "none", 20, 0, 0.80, 0.9, meta_steps=300)
    fake_run(tmp_path, "maml", 20, 0, 0.50, 0.6, meta_steps=1300)
    write_report(tmp_path)
    header = (tmp_path / "report.md").read_text().splitlines()[2]
    assert "(300, 20, 100, 100) (leap, none), (1300, 20, 100, 100) (maml)." in header


def test_a_config_written_before_a_field_existed_is_compared_as_the_run_ran_it(tmp_path):
    # FOMAML seed 1 ran before RunConfig had inner_clip, seed 0 after: the same protocol
    # (Omniglot never clips), one column of two seeds, not two columns of one.
    old = fake_run(tmp_path, "fomaml", 20, 1, 0.70, 0.8)
    config = json.loads((old / "config.json").read_text())
    assert config.pop("inner_clip") == 0.0  # Omniglot's, resolved
    (old / "config.json").write_text(json.dumps(config))
    fake_run(tmp_path, "fomaml", 20, 0, 0.74, 0.8, inner_clip=0.0)
    table = sweep_table(collect_runs(tmp_path)).splitlines()
    assert table[0] == "| Pretraining tasks | FOMAML |"
    assert "(n=2)" in table[2]
    fake_run(tmp_path / "clipped", "fomaml", 20, 0, 0.60, 0.8, inner_clip=1.0)  # another protocol: its own column
    table = sweep_table(collect_runs(tmp_path)).splitlines()
    assert table[0] == "| Pretraining tasks | FOMAML (inner_clip=0.0) | FOMAML (inner_clip=1.0) |"


def test_runs_of_one_method_evaluated_for_different_lengths_get_a_curve_each_in_figure3(tmp_path):
    # Their training curves differ in length; pooling them as seeds crashed the report (numpy
    # could not stack them) after its table was written.
    for steps, seed in ((50, 0), (100, 0), (100, 1)):
        run = fake_run(tmp_path, "leap", 20, seed, 0.3, 0.5, eval_steps=steps)
        result = json.loads((run / "eval-test.json").read_text())
        (run / "eval-test.json").write_text(json.dumps({**result, "curve": [0.5] * steps}))
    runs = collect_runs(tmp_path)
    assert len(runs) == 3
    paths = write_report(tmp_path)
    assert (tmp_path / "figure3.png") in paths and (tmp_path / "figure3.png").stat().st_size > 0
    assert "Leap (eval_steps=100)" in sweep_table(runs) and "Leap (eval_steps=50)" in sweep_table(runs)


def test_report_puts_the_papers_table2_beside_ours_for_omniglot(tmp_path, capsys):
    fake_run(tmp_path, "leap", 25, 0, 0.30, 0.5)
    fake_run(tmp_path, "reptile", 25, 0, 0.35, 0.55)
    assert main(["report", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "The paper's Table 2" in text
    assert "| 25 | 24.8 | 29.4 | 23.5 | 42.9 | 44.0 | 82.8 |" in text
    assert (tmp_path / "figure3.png").is_file()


def test_report_leaves_out_results_of_another_evaluation_or_init_and_says_why(tmp_path, capsys):
    kept = fake_run(tmp_path, "leap", 20, 0, 0.30, 0.5)
    archived = fake_run(tmp_path, "leap", 20, 5, 0.40, 0.5)
    (archived / "init.safetensors").unlink()  # as committed under results/: checked on its settings alone
    other_settings = fake_run(tmp_path, "leap", 20, 1, 0.10, 0.1)
    path = other_settings / "eval-test.json"
    result = json.loads(path.read_text())
    result["evaluation"]["eval_steps"] = 2
    path.write_text(json.dumps(result))
    retrained = fake_run(tmp_path, "leap", 20, 2, 0.10, 0.1)
    (retrained / "init.safetensors").write_bytes(b"a later run's init")
    old_format = fake_run(tmp_path, "leap", 20, 3, 0.10, 0.1)
    result = json.loads((old_format / "eval-test.json").read_text())
    del result["evaluation"], result["init_sha256"]
    (old_format / "eval-test.json").write_text(json.dumps(result))
    garbage = fake_run(tmp_path, "leap", 20, 4, 0.10, 0.1)
    (garbage / "config.json").write_text("[]")

    assert main(["report", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    text = (tmp_path / "report.md").read_text()
    assert "| 20 | 35.0 ± 63.5 (n=2) |" in text  # the results that are their runs'
    assert f"{kept}" not in err and f"{archived}" not in err
    for run, why in ((other_settings, "other evaluation settings (eval_steps 2, the run's 100)"),
                     (retrained, "another initialization"), (old_format, "written by an older leap"),
                     (garbage, "config.json cannot be read")):
        assert f"left out {run}: " in err and why in err
        assert f"{run}: " in text


def test_report_of_a_directory_without_runs_is_a_usage_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no finished runs" in capsys.readouterr().err
    assert write_report(tmp_path) == []


def test_download_offline_says_which_files_to_put_where(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(FileNotFoundError, match=r"images_background\.zip and images_evaluation\.zip"):
        download_omniglot(tmp_path)
    assert list(tmp_path.iterdir()) == []
    argv = ["train", "--benchmark", "omniglot", "--download", "--data-dir", str(tmp_path),
            "--out", str(tmp_path / "run"), *BUDGET]
    assert main(argv) == 2
    assert not (tmp_path / "run").exists()


def test_report_shows_test_error_against_meta_steps_from_checkpoint_evaluations(tmp_path):
    leap0 = fake_run(tmp_path, "leap", 20, 0, 0.30, 0.5, meta_steps=300)
    leap1 = fake_run(tmp_path, "leap", 20, 1, 0.40, 0.5, meta_steps=300)
    fake_run(tmp_path, "none", 20, 0, 0.80, 0.9, meta_steps=300)
    for run, errors in ((leap0, {25: 0.70, 100: 0.50}), (leap1, {25: 0.60, 100: 0.40})):
        final = json.loads((run / "eval-test.json").read_text())
        for step, error in errors.items():
            (run / f"eval-test-step-{step:08d}.json").write_text(json.dumps(
                {**final, "test_error": error, "meta_step": step, "init_sha256": f"theta0 at {step}"}))
    bad = json.loads((leap0 / "eval-test-step-00000025.json").read_text())
    bad["evaluation"]["eval_steps"] = 5  # another evaluation: left out, named
    (leap0 / "eval-test-step-00000050.json").write_text(json.dumps({**bad, "meta_step": 50}))
    paths = write_report(tmp_path)
    assert tmp_path / "budget.png" in paths
    text = (tmp_path / "report.md").read_text()
    table = text.split("## Test error (%) against meta-training")[1].split("\n\n")[1].splitlines()
    assert table[0] == "| Meta-steps | Leap |"  # no pretraining was not evaluated along meta-training
    assert table[2:] == ["| 25 | 65.0 ± 63.5 (n=2) |", "| 100 | 45.0 ± 63.5 (n=2) |", "| 300 | 35.0 ± 63.5 (n=2) |"]
    assert "eval-test-step-00000050.json: it was made with other evaluation settings" in text


def test_report_gives_paired_differences_over_seeds_and_over_seed_task_pairs(tmp_path):
    for seed, (leap_errors, reptile_errors) in enumerate((([0.2, 0.4], [0.3, 0.6]), ([0.3, 0.3], [0.4, 0.5]))):
        for method, errors in (("leap", leap_errors), ("reptile", reptile_errors)):
            run = fake_run(tmp_path, method, 20, seed, sum(errors) / 2, 0.5)
            result = json.loads((run / "eval-test.json").read_text())
            (run / "eval-test.json").write_text(json.dumps({**result, "test_errors": errors}))
    fake_run(tmp_path, "finetune", 20, 5, 0.1, 0.1)  # no Leap run with seed 5: no pair
    write_report(tmp_path)
    text = (tmp_path / "report.md").read_text()
    # Leap - Reptile per seed: -15 and -15 points; per (seed, task): -10, -20, -10, -20.
    assert "| Leap - Reptile | 20 | -15.0 ± 0.0 (n=2) | -15.0 ± 9.2 (n=4) |" in text
    assert " - Leap | 20 |" not in text  # finetuning has no seed shared with Leap


def test_report_pairs_leap_with_maml_and_fomaml_on_their_shared_seeds(tmp_path):
    # Table 2's claims that Leap ends below MAML and FOMAML: each pair over the seeds both ran.
    fake_run(tmp_path, "leap", 20, 0, 0.40, 0.5)
    fake_run(tmp_path, "leap", 20, 1, 0.30, 0.5)
    fake_run(tmp_path, "maml", 20, 0, 0.50, 0.5)
    fake_run(tmp_path, "fomaml", 20, 0, 0.70, 0.5)
    fake_run(tmp_path, "fomaml", 20, 1, 0.80, 0.5)
    write_report(tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "| Leap - MAML | 20 | -10.0 (n=1) | -10.0 (n=1) |" in text
    assert "| Leap - FOMAML | 20 | -40.0 ± 127.1 (n=2) | -40.0 ± 127.1 (n=2) |" in text


def test_report_costs_each_method_from_its_metrics_when_its_evaluation_lacks_the_time(tmp_path):
    # Evaluations written before they recorded train_seconds: the meta-steps' own times
    # in metrics.jsonl are summed instead (the same sum); a run that records it is read as is.
    for seed, seconds in ((0, (10.0, 20.0)), (1, (30.0, 50.0))):
        run = fake_run(tmp_path, "leap", 20, seed, 0.4, 0.5)
        (run / "metrics.jsonl").write_text("".join(json.dumps({"step": i + 1, "seconds": s}) + "\n"
                                                   for i, s in enumerate(seconds)))
    run = fake_run(tmp_path, "reptile", 20, 0, 0.5, 0.5)
    result = json.loads((run / "eval-test.json").read_text())
    (run / "eval-test.json").write_text(json.dumps({**result, "train_seconds": 42.0}))
    write_report(tmp_path)
    cost = (tmp_path / "report.md").read_text().split("## Cost of meta-training")[1]
    assert "| Leap | 20 | 2 | 55 (30-80) | - |" in cost
    assert "| Reptile | 20 | 1 | 42 (42-42) | - |" in cost
