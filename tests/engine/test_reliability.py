"""Reliability: exact resume after SIGKILL/SIGTERM, corrupt files, non-finite tasks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers.torchrun import FAULT_INJECTION, fault_env
from leap.cli import main
from leap.engine import rundir
from leap.engine.loop import MEASURED_KEYS, fit, meta_step
from leap.experiments.config import RunConfig
from leap.experiments.fewshot.trainer import MetaTrainer
from leap.tasks.builtin import BuiltinBenchmark
from leap.util.errors import CorruptFileError, RunStopped
from leap.util.files import (
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
    save_checkpoint,
    save_figure,
    save_init,
)

RUN = ["train", "--method", "leap", "--meta-steps", "12", "--meta-batch", "3", "--task-steps", "20",
       "--checkpoint-every", "2", "--no-progress"]


def leap_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "leap", *args]


def steps_in(out: Path) -> list[int]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.endswith("}")]


def comparable_metrics(out: Path) -> list[dict]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in MEASURED_KEYS} for r in records]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    subprocess.run(leap_cmd(*RUN, "--out", str(out)), check=True, timeout=300)
    return out


def start_and_wait(out: Path, min_steps: int) -> subprocess.Popen:
    proc = subprocess.Popen(leap_cmd(*RUN, "--out", str(out)), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(steps_in(out)) < min_steps:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "run made no progress"
        time.sleep(0.01)
    return proc


def assert_same_run(out: Path, reference: Path) -> None:
    assert (out / "init.safetensors").read_bytes() == (reference / "init.safetensors").read_bytes()
    assert steps_in(out) == list(range(1, 13))  # no duplicated or missing meta-step
    assert comparable_metrics(out) == comparable_metrics(reference)


@pytest.mark.parametrize("kill_after_steps", [1, 4, 7])
def test_sigkill_then_resume_is_bit_identical(tmp_path, reference, kill_after_steps):
    out = tmp_path / "run"
    proc = start_and_wait(out, kill_after_steps)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "init.safetensors").exists()
    subprocess.run(leap_cmd(*RUN, "--out", str(out), "--resume"), check=True, timeout=300)
    assert_same_run(out, reference)


def test_sigterm_writes_a_checkpoint_and_resume_finishes_the_same_run(tmp_path, reference):
    out = tmp_path / "run"
    proc = start_and_wait(out, 3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "interrupted at meta-step" in err and "--resume" in err
    stopped_at = steps_in(out)[-1]
    assert list_checkpoints(out / "checkpoints")[-1][0] == stopped_at
    subprocess.run(leap_cmd(*RUN, "--out", str(out), "--resume"), check=True, timeout=300)
    assert_same_run(out, reference)


def test_a_signal_during_a_long_meta_step_is_acknowledged_at_once_and_the_run_stops_after_it(tmp_path):
    # A meta-step of RL or Multi-CV takes minutes to hours: the user must hear at once that
    # the signal was taken, not only when the meta-step ends. The SIGTERM arrives as meta-step
    # 2 begins (fault_injection.py sends it, as a scheduler would): a signal sent from outside
    # once meta-step 1 is recorded may land before the loop's check after meta-step 1 on a
    # loaded machine, and then the run rightly stops after meta-step 1.
    out = tmp_path / "run"
    long_steps = ["train", "--method", "leap", "--meta-steps", "3", "--meta-batch", "3", "--task-steps", "4000",
                  "--no-progress", "--out", str(out)]
    proc = subprocess.run([sys.executable, str(FAULT_INJECTION), *long_steps], env=fault_env("sigterm", 0, 2),
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("leap: ")]
    heard = lines.index("leap: SIGTERM received: stopping after the meta-step in flight, with a checkpoint")
    assert lines[heard - 1].startswith("leap: 1/3 ") and lines[heard + 1].startswith("leap: 2/3 ")  # heard during 2
    assert steps_in(out) == [1, 2]  # meta-step 2 finished, then the run stopped
    assert proc.returncode == 128 + signal.SIGTERM and "interrupted at meta-step 2" in proc.stderr


def test_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path, reference):
    out = tmp_path / "run"
    proc = start_and_wait(out, 7)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    checkpoints = list_checkpoints(out / "checkpoints")
    assert len(checkpoints) == 2  # the previous one is kept until the next is complete
    newest = checkpoints[-1][1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    proc = subprocess.run(leap_cmd(*RUN, "--out", str(out), "--resume"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert str(newest) in proc.stderr and "falling back" in proc.stderr
    assert_same_run(out, reference)


def test_truncated_init_is_a_clear_error_naming_the_file(tmp_path, reference, capsys):
    out = tmp_path / "copy"
    out.mkdir()
    (out / "config.json").write_bytes((reference / "config.json").read_bytes())
    data = (reference / "init.safetensors").read_bytes()
    (out / "init.safetensors").write_bytes(data[: len(data) // 3])
    assert main(["evaluate", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out / "init.safetensors") in err and "not a readable safetensors file" in err


class PoisonedBenchmark(BuiltinBenchmark):
    """The built-in benchmark with NaN inputs in chosen pretraining sources."""

    def __init__(self, poisoned: set[int]) -> None:
        super().__init__()
        self.poisoned = poisoned

    def task(self, split, source, generator=None, task_seed=0):
        task = super().task(split, source, generator, task_seed)
        if split == "train" and source in self.poisoned:
            task = task.to("cpu")
            task.train_x = torch.full_like(task.train_x, float("nan"))
        return task


@pytest.mark.parametrize("method", ["leap", "reptile", "fomaml", "maml"])
def test_a_non_finite_task_is_dropped_and_counted(method):
    cfg = RunConfig(method=method, meta_steps=3, meta_batch=4, task_steps=5, pretrain_tasks=2).resolved()
    trainer = MetaTrainer(cfg, PoisonedBenchmark({0}))
    for _ in range(3):
        record = meta_step(trainer)
        assert record["valid_tasks"] + record["dropped_tasks"] == 4
        assert all(torch.isfinite(p).all() for p in trainer.learner.parameters())
    assert sum(trainer.draw_tasks(s)[i][0].source == 0 for s in range(3) for i in range(4)) > 0


def test_when_every_task_fails_theta0_is_unchanged_and_the_run_stops_rolled_back_with_a_checkpoint(tmp_path):
    cfg = RunConfig(method="leap", meta_steps=10, meta_batch=2, task_steps=5, pretrain_tasks=2).resolved()
    trainer = MetaTrainer(cfg, PoisonedBenchmark({0, 1}))
    before = [p.detach().clone() for p in trainer.learner.parameters()]
    with pytest.raises(RunStopped, match="3 consecutive meta-steps; rolled back to meta-step 0") as stopped:
        fit(trainer, tmp_path, max_failed_steps=3, checkpoint_every=1, log=lambda msg: None)
    assert stopped.value.exit_code == 1
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.learner.parameters()))
    assert [step for step, _ in list_checkpoints(tmp_path / "checkpoints")] == [0]  # later ones dropped
    assert steps_in(tmp_path) == []


def test_a_run_whose_meta_learning_rate_is_far_too_high_continues_with_a_lower_one_as_if_run_so(tmp_path, capsys):
    run = ["train", "--method", "leap", "--meta-steps", "4", "--meta-batch", "2", "--task-steps", "5",
           "--max-failed-steps", "2", "--checkpoint-every", "1", "--no-progress", "--out", str(tmp_path / "run")]
    # 1e30 makes θ0 huge after meta-step 1, so every task of meta-steps 2 and 3 fails: the
    # run stops rolled back to before that meta-update.
    assert main([*run, "--meta-lr", "1e30"]) == 1
    assert "rolled back to meta-step 0" in capsys.readouterr().err
    assert main([*run, "--resume", "--meta-lr", "0.1"]) == 0
    err = capsys.readouterr().err
    assert "continuing" in err and "with meta learning rate 0.1 from meta-step 0" in err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["meta_lr"] == 1e30 and config["meta_lr_changes"] == [[0, 0.1]]
    assert steps_in(tmp_path / "run") == [1, 2, 3, 4]
    # The recorded config trained from scratch is the same run, and so is --meta-lr 0.1 alone.
    cfg = RunConfig.from_dict(config).resolved()
    (tmp_path / "again").mkdir()
    fit(MetaTrainer(cfg, BuiltinBenchmark()), tmp_path / "again", log=lambda msg: None)
    assert main([*run[:-1], str(tmp_path / "plain"), "--meta-lr", "0.1"]) == 0
    init = (tmp_path / "run" / "init.safetensors").read_bytes()
    assert (tmp_path / "again" / "init.safetensors").read_bytes() == init
    assert (tmp_path / "plain" / "init.safetensors").read_bytes() == init


def test_same_command_and_seed_give_identical_outputs(tmp_path):
    for name in ("a", "b"):
        assert main([*RUN[:1], "--method", "fomaml", "--meta-steps", "3", "--no-progress", "--out",
                     str(tmp_path / name)]) == 0
    assert (tmp_path / "a" / "init.safetensors").read_bytes() == (tmp_path / "b" / "init.safetensors").read_bytes()
    assert comparable_metrics(tmp_path / "a") == comparable_metrics(tmp_path / "b")


class _RunsCodeWhenUnpickled:
    """A pickle payload: unpickling it calls ``Path.touch`` on a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_malicious_checkpoint_is_refused_without_running_its_code(tmp_path):
    marker = tmp_path / "pwned"
    ckpt_dir = tmp_path / "checkpoints"
    ckpt_dir.mkdir()
    path = ckpt_dir / "checkpoint-5.pt"
    torch.save({"step": 5, "payload": _RunsCodeWhenUnpickled(marker)}, path)
    with pytest.raises(CorruptFileError, match="not a readable checkpoint"):
        load_checkpoint(path)
    assert load_latest_checkpoint(ckpt_dir) is None  # resume falls back instead of loading it
    assert not marker.exists()


def test_checkpoint_carries_the_metrics_so_a_lost_metrics_file_is_restored(tmp_path, reference):
    out = tmp_path / "run"
    proc = start_and_wait(out, 5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    (out / "metrics.jsonl").unlink()
    subprocess.run(leap_cmd(*RUN, "--out", str(out), "--resume"), check=True, timeout=300)
    assert_same_run(out, reference)


def test_a_figure_whose_rendering_fails_leaves_the_previous_file_and_no_temporary_one(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = tmp_path / "curves.png"
    path.write_bytes(b"the previous figure")
    fig = plt.figure()

    def killed_midway(target, **kwargs):
        target.write(b"\x89PNG half an image")
        raise KeyboardInterrupt  # as a ^C during rendering

    fig.savefig = killed_midway
    with pytest.raises(KeyboardInterrupt):
        save_figure(fig, path)
    plt.close(fig)
    assert path.read_bytes() == b"the previous figure"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]
    save_figure(plt.figure(), path)  # and a figure that renders replaces it whole
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class _DivergingTrainer:
    """A Trainer whose θ0 is NaN after its one meta-step (a meta learning rate far too high)."""

    meta_steps, meta_batch, trains = 1, 1, True

    def __init__(self) -> None:
        self.step_count, self.consecutive_failures, self.stop_requests, self.stop_signal = 0, 0, [], None
        self.config = {"what": "diverging"}

    @property
    def finished(self) -> bool:
        return self.step_count >= self.meta_steps

    def step(self) -> dict:  # fit's meta_step counts the step (no meta-optimizer: no update)
        return {"valid_tasks": 1, "dropped_tasks": 0}

    def validate(self) -> dict:
        return {}

    def init_state(self) -> dict:
        return {"weight": torch.tensor([1.0, float("nan")])}

    def state_dict(self) -> dict:
        return {"step": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = state["step"]


def test_a_non_finite_theta0_is_never_saved(tmp_path):
    with pytest.raises(RunStopped, match="θ0 is not finite after meta-step 1") as stopped:
        fit(_DivergingTrainer(), tmp_path, log=lambda m: None)
    assert stopped.value.exit_code == 1
    assert not (tmp_path / "init.safetensors").exists()
    with pytest.raises(ValueError, match="non-finite initialization"):
        save_init(tmp_path / "init.safetensors", {"w": torch.tensor([float("inf")])})
    assert not (tmp_path / "init.safetensors").exists()


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda s: s.pop(next(iter(s))), "does not fit the model: missing"),
        (lambda s: s.update(extra=torch.zeros(1)), "unexpected ['extra']"),
        (lambda s: s.update({k: torch.zeros(3, 3) for k in [next(iter(s))]}), "the model's is torch.float32"),
        (lambda s: s.update({k: s[k].double() for k in [next(iter(s))]}), "is torch.float64"),
        (lambda s: s[next(iter(s))].view(-1).__setitem__(0, float("nan")), "non-finite values in"),
    ],
    ids=["missing key", "unexpected key", "wrong shape", "wrong dtype", "NaN"],
)
def test_evaluate_refuses_an_init_that_does_not_fit_the_model_with_one_line(tmp_path, reference, capsys, damage,
                                                                             message):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_bytes((reference / "config.json").read_bytes())
    state = load_file(str(reference / "init.safetensors"))
    damage(state)
    save_file(state, str(run / "init.safetensors"))
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"leap: error: {run / 'init.safetensors'}: ") and message in err and "\n" not in err
    # No result written; the run's lock file is there because evaluate holds the run's lock.
    assert sorted(p.name for p in run.iterdir()) == [".lock", "config.json", "init.safetensors"]


def copy_run(reference: Path, out: Path) -> Path:
    shutil.copytree(reference, out)
    return out


def flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def rewrite_newest(path: Path, change) -> None:
    state = load_checkpoint(path)
    change(state)
    save_checkpoint(path.parent, int(path.stem.split("-")[1]), state, keep=99)


@pytest.mark.parametrize(
    "damage,reason",
    [
        (flip_a_bit, "checksum mismatch"),
        (lambda p: rewrite_newest(p, lambda s: s["model"].update({k: torch.zeros(3) for k in list(s["model"])[:1]})),
         "this run's is torch.float32"),
        (lambda p: rewrite_newest(p, lambda s: s.update(step=12, metrics=s["metrics"][:5])), "do not cover"),
        (lambda p: rewrite_newest(p, lambda s: s.pop("learner")), "missing learner"),
    ],
    ids=["flipped bit", "wrong shape", "metrics cut", "learner state gone"],
)
def test_a_damaged_or_foreign_checkpoint_is_skipped_and_the_previous_one_resumes_the_same_run(
    tmp_path, reference, damage, reason
):
    out = copy_run(reference, tmp_path / "run")
    (out / "init.safetensors").unlink()
    newest = list_checkpoints(out / "checkpoints")[-1][1]
    damage(newest)
    proc = subprocess.run(leap_cmd(*RUN, "--out", str(out), "--resume"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "falling back" in proc.stderr and reason in proc.stderr, proc.stderr
    assert "resuming from" in proc.stderr and "(meta-step 10)" in proc.stderr
    assert_same_run(out, reference)


def test_a_checkpoint_of_another_configuration_is_refused_not_resumed(tmp_path, reference, capsys):
    out = copy_run(reference, tmp_path / "run")
    for _, path in list_checkpoints(out / "checkpoints"):
        rewrite_newest(path, lambda s: s["config"].update(seed=5))
    assert main([*RUN, "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "was written by another configuration (it differs in seed)" in err


def test_a_second_writer_of_a_run_directory_is_refused_with_one_line(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    rundir.lock(out)  # as a run in progress in this process would
    try:
        proc = subprocess.run(leap_cmd(*RUN, "--out", str(out)), capture_output=True, text=True, timeout=120)
    finally:
        rundir.release(out)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"leap: error: {out} is being written by another leap process (pid {os.getpid()}); "
                                   "wait for it to finish or use another --out")
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_overwrite_removes_the_old_runs_outputs_and_resume_overwrite_starts_afresh(tmp_path, reference, capsys):
    out = copy_run(reference, tmp_path / "run")
    (out / "eval-test.json").write_text('{"test_error": 0.5}')  # the old run's evaluation
    (out / "checkpoints" / ".checkpoint-00000014.pt.x1.tmp").write_bytes(b"a killed write")
    short = ["train", "--method", "reptile", "--meta-steps", "2", "--meta-batch", "2", "--task-steps", "3",
             "--no-progress", "--out", str(out)]
    assert main([*short, "--resume", "--overwrite"]) == 0
    assert "resuming" not in capsys.readouterr().err
    assert not (out / "eval-test.json").exists()
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["checkpoint-00000002.pt"]
    assert steps_in(out) == [1, 2] and json.loads((out / "config.json").read_text())["method"] == "reptile"


def test_overwrite_refuses_a_directory_holding_what_leap_did_not_write_and_deletes_nothing(tmp_path, reference,
                                                                                           capsys):
    # The case: --out pointing at a user's project, whose files carry a run's names.
    out = tmp_path / "project"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "model.ckpt").write_bytes(b"the user's model")
    (out / "config.json").write_text('{"learning_rate": 3}')
    (out / "result.json").write_text('{"accuracy": 0.9}')
    (out / "tensorboard").mkdir()
    (out / "tensorboard" / "notes.txt").write_text("the user's notes")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for extra in ([], ["--resume"]):
        assert main([*RUN, "--out", str(out), "--overwrite", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"leap: error: {out} holds checkpoints (and 3 more), which leap did not write")
        assert "\n" not in err
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # One foreign file beside a real run is enough to refuse, and it is named.
    run = copy_run(reference, tmp_path / "run")
    (run / "notes.txt").write_text("mine")
    assert main([*RUN, "--seed", "3", "--out", str(run), "--overwrite"]) == 2
    assert f"{run} holds notes.txt, which leap did not write" in capsys.readouterr().err
    assert (run / "init.safetensors").read_bytes() == (reference / "init.safetensors").read_bytes()


@pytest.mark.parametrize("argv", [["train", "--out", ""], ["train", "--out", "  "], ["compare", "--out", ""],
                                  ["train", "--out", "x", "--data-dir", ""], ["evaluate", ""], ["report", " "],
                                  ["train", "--benchmark", "multicv", "--held-out", "mnist", "--out", "x",
                                   "--cache-dir", ""]])
def test_an_empty_or_blank_path_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)  # Path("") is the working directory: it must stay untouched
    (tmp_path / "mine.txt").write_text("the user's")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("leap: error: ") and "an empty path" in err and "\n" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_a_finished_run_extended_by_more_meta_steps_equals_the_longer_run_and_cannot_be_shortened(tmp_path,
                                                                                                 reference, capsys):
    short = ["--meta-steps", "8"] + [a for a in RUN[RUN.index("--meta-batch"):]]
    out = tmp_path / "run"
    assert main(["train", "--method", "leap", *short, "--out", str(out)]) == 0
    assert main([*RUN, "--out", str(out), "--resume"]) == 0  # RUN has --meta-steps 12
    assert_same_run(out, reference)
    assert json.loads((out / "config.json").read_text())["meta_steps"] == 12
    assert main(["train", "--method", "leap", *short, "--out", str(out), "--resume"]) == 2
    assert "--meta-steps 8: the run in" in capsys.readouterr().err and steps_in(out) == list(range(1, 13))


def test_a_resumed_runs_progress_continues_and_its_time_covers_every_segment(tmp_path, reference):
    from leap.util.progress import Progress

    bar = Progress(12, "leap", enabled=False)
    bar.update({"step": 9, "train_loss": 1.0, "train_error": 0.5})  # the first step after resuming at 8
    assert bar.n == 9
    records = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    out = copy_run(reference, tmp_path / "run")
    (out / "init.safetensors").unlink()
    for _, path in list_checkpoints(out / "checkpoints")[1:]:
        path.unlink()  # resume from meta-step 10: two steps left
    cfg = RunConfig.from_dict(json.loads((out / "config.json").read_text())).resolved()
    info = fit(MetaTrainer(cfg, BuiltinBenchmark()), out, resume=True, log=lambda msg: None)
    resumed = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert info["train_seconds"] == pytest.approx(sum(r["seconds"] for r in resumed))
    assert [r["seconds"] for r in resumed[:10]] == [r["seconds"] for r in records[:10]]  # the earlier segment's


def test_each_meta_step_logs_the_norms_of_the_meta_gradient_its_step_and_theta0(tmp_path):
    # With SGD (no momentum) θ0 moves by exactly the rate times the meta-gradient; θ0's norm is
    # that of the init written at the end. Methods without a meta-update log none.
    out = tmp_path / "leap"
    assert main(["train", "--meta-steps", "2", "--meta-lr", "0.3", "--out", str(out), "--no-progress"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        assert r["meta_grad_norm"] > 0 and r["meta_step_norm"] == pytest.approx(0.3 * r["meta_grad_norm"], rel=1e-4)
    init = load_file(str(out / "init.safetensors"))
    assert records[-1]["init_norm"] == pytest.approx(
        sum(float(t.double().square().sum()) for t in init.values()) ** 0.5, rel=1e-6)
    assert main(["train", "--method", "none", "--meta-steps", "1", "--out", str(tmp_path / "none"),
                 "--no-progress"]) == 0
    assert "meta_grad_norm" not in (tmp_path / "none" / "metrics.jsonl").read_text()
