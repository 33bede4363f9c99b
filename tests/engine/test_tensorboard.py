"""--tensorboard: the metrics as TensorBoard scalars, equal to metrics.jsonl, also across a resume."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from leap.cli import main
from leap.util.files import list_checkpoints

TINY = ["--method", "leap", "--meta-steps", "2", "--meta-batch", "2", "--task-steps", "3", "--no-progress"]


def scalars(out: Path) -> dict[str, list[tuple[int, float]]]:
    reader = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                 reason="tensorboard is not installed (it is in the dev extra)")
    events = reader.EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_every_numeric_metric_is_a_scalar_at_its_meta_step_with_the_same_value(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--tensorboard", *TINY]) == 0
    got, records = scalars(out), metrics(out)
    numeric = {k for r in records for k, v in r.items() if k != "step" and isinstance(v, int | float)
               and not isinstance(v, bool)}
    assert "train_loss" in numeric and set(got) == numeric
    for tag, points in got.items():
        assert [s for s, _ in points] == [r["step"] for r in records if tag in r]
        assert [v for _, v in points] == pytest.approx([r[tag] for r in records if tag in r], rel=1e-6)


def test_a_resumed_run_shows_each_meta_step_once(tmp_path):
    out = tmp_path / "run"
    base = ["train", "--out", str(out), "--tensorboard", "--checkpoint-every", "1", "--method", "leap",
            "--meta-batch", "2", "--task-steps", "3", "--no-progress"]
    assert main([*base, "--meta-steps", "4"]) == 0
    # Resume from step 2 (as after a crash that lost the later checkpoints): steps 3 and 4
    # are trained again, and the first run's events of those steps must not stay beside
    # the new ones.
    for step, path in list_checkpoints(out / "checkpoints"):
        if step > 2:
            path.unlink()
    assert main([*base, "--meta-steps", "4", "--resume"]) == 0
    points = scalars(out)["train_loss"]
    assert [s for s, _ in points] == [1, 2, 3, 4]
    assert [v for _, v in points] == pytest.approx([r["train_loss"] for r in metrics(out)], rel=1e-6)


def test_without_the_tensorboard_package_the_option_is_refused_in_one_line_before_any_work(tmp_path, capsys,
                                                                                        monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--tensorboard", *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "leap: error: --tensorboard needs the tensorboard package: pip install tensorboard"
    assert not out.exists()
