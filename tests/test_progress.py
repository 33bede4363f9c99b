"""Progress: a bar on a terminal only; elsewhere, and with --no-progress, one line per meta-step."""

from __future__ import annotations

from leap.cli import main
from leap.util.progress import Progress


def test_a_bar_asked_for_on_a_non_terminal_becomes_lines_and_other_ranks_print_nothing(capsys):
    bar = Progress(3, "leap", enabled=True, bar=True)  # capsys's stderr is not a terminal
    silent = Progress(3, "leap", enabled=False, bar=True)
    for step in (1, 2, 3):
        bar.update({"step": step, "train_loss": 0.5, "train_error": 0.25})
        silent.update({"step": step, "train_loss": 0.5, "train_error": 0.25})
    bar.close()
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [f"leap: {s}/3 loss 0.500 err 0.250" for s in (1, 2, 3)]


def test_no_progress_still_logs_one_line_per_meta_step(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run"), "--meta-steps", "3", "--meta-batch", "2",
                 "--task-steps", "3", "--no-progress"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" loss ")[0] for line in lines] == ["leap: 1/3", "leap: 2/3", "leap: 3/3"]
