"""Reliability: exact resume after SIGKILL/SIGTERM, corrupt files, non-finite tasks."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from leap.cli import main
from leap.engine.loop import fit
from leap.experiments.config import RunConfig
from leap.experiments.fewshot.trainer import MetaTrainer
from leap.tasks.builtin import BuiltinBenchmark
from leap.util.errors import CorruptFileError, RunStopped
from leap.util.files import list_checkpoints, load_checkpoint, load_latest_checkpoint

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
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


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
        record = trainer.step()
        assert record["valid_tasks"] + record["dropped_tasks"] == 4
        assert all(torch.isfinite(p).all() for p in trainer.learner.parameters())
    assert sum(trainer.draw_tasks(s)[i][0].source == 0 for s in range(3) for i in range(4)) > 0


def test_when_every_task_fails_theta0_is_unchanged_and_the_run_stops_with_a_checkpoint(tmp_path):
    cfg = RunConfig(method="leap", meta_steps=10, meta_batch=2, task_steps=5, pretrain_tasks=2).resolved()
    trainer = MetaTrainer(cfg, PoisonedBenchmark({0, 1}))
    before = [p.detach().clone() for p in trainer.learner.parameters()]
    with pytest.raises(RunStopped, match="3 consecutive meta-steps") as stopped:
        fit(trainer, tmp_path, max_failed_steps=3, log=lambda msg: None)
    assert stopped.value.exit_code == 1
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.learner.parameters()))
    assert list_checkpoints(tmp_path / "checkpoints")[-1][0] == 3
    assert steps_in(tmp_path) == [1, 2, 3]


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
