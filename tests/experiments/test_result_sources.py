"""A table shows only numbers that the run it names produced: every result file records its
evaluation settings and the digest of the init it evaluated, and compare, sweep and report
take it only when both match the run as it is now (issue 31, point 1)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from leap.cli import main
from leap.engine import rundir
from leap.experiments.config import RunConfig
from leap.experiments.fewshot.results import evaluation_settings

TINY = ["--meta-steps", "2", "--meta-batch", "2", "--task-steps", "3", "--eval-steps", "4", "--no-progress"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_eval_file_records_its_evaluation_settings_and_the_digest_of_the_init_it_evaluated(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY]) == 0
    assert main(["evaluate", str(run), "--eval-steps", "3", "--seed", "5", "--no-progress"]) == 0
    result = json.loads((run / "eval-test.json").read_text())
    cfg = RunConfig.from_dict({**json.loads((run / "config.json").read_text()), "eval_steps": 3, "seed": 5})
    assert result["evaluation"] == evaluation_settings(cfg.resolved(), "test")
    assert result["evaluation"]["eval_steps"] == 3 and result["evaluation"]["seed"] == 5
    assert result["init_sha256"] == sha256(run / "init.safetensors")
    assert len(result["curve"]) == 3


def test_compare_evaluates_again_a_result_that_another_evaluation_overwrote(tmp_path, capsys):
    out = tmp_path / "cmp"
    command = ["compare", "--methods", "leap,none", "--out", str(out), *TINY]
    assert main(command) == 0
    first = json.loads((out / "results.json").read_text())
    # The case: an evaluation with other settings overwrites the run's eval-test.json.
    assert main(["evaluate", str(out / "leap"), "--eval-steps", "2", "--no-progress"]) == 0
    assert json.loads((out / "leap" / "eval-test.json").read_text())["evaluation"]["eval_steps"] == 2
    capsys.readouterr()
    assert main(command) == 0
    err = capsys.readouterr().err
    assert "evaluating again" in err and "eval_steps 2, the run's 4" in err
    again = json.loads((out / "results.json").read_text())
    for method in ("leap", "none"):
        assert again[method]["test_errors"] == first[method]["test_errors"]
        assert len(again[method]["curve"]) == 4
    # The untouched run was read back, not evaluated again.
    assert f"{out / 'none'}: evaluating again" not in err


def test_evaluate_holds_the_runs_lock_so_no_other_run_replaces_it_meanwhile(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY]) == 0
    rundir.release(run)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from leap.engine import rundir; "
                               f"rundir.lock({str(run)!r}); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = subprocess.run([sys.executable, "-m", "leap", "evaluate", str(run), "--no-progress"],
                              capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"leap: error: {run} is being written by another leap process (pid {holder.pid}); "
                                   "wait for it to finish or use another --out")
    assert not (run / "eval-test.json").exists()


def test_theta0_at_a_kept_checkpoint_is_evaluated_into_its_own_file_and_the_last_one_is_the_init(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY, "--meta-steps", "3", "--checkpoint-every", "1",
                 "--keep-checkpoints", "0"]) == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        f"checkpoint-0000000{s}.pt" for s in (1, 2, 3)]
    assert main(["evaluate", str(run), "--no-progress"]) == 0
    for step in (1, 3):
        assert main(["evaluate", str(run), "--checkpoint", str(step), "--no-progress"]) == 0
    final = json.loads((run / "eval-test.json").read_text())
    last = json.loads((run / "eval-test-step-00000003.json").read_text())
    first = json.loads((run / "eval-test-step-00000001.json").read_text())
    # θ0 of the last checkpoint is the saved init, byte for byte: same digest, same numbers.
    assert last["init_sha256"] == final["init_sha256"] == sha256(run / "init.safetensors")
    assert last["test_errors"] == final["test_errors"] and last["meta_step"] == 3
    assert first["init_sha256"] != final["init_sha256"] and first["meta_step"] == 1
    assert first["evaluation"] == final["evaluation"]
    capsys.readouterr()
    assert main(["evaluate", str(run), "--checkpoint", "7", "--no-progress"]) == 2
    assert "--checkpoint 7: no checkpoint-00000007.pt" in capsys.readouterr().err


def test_a_checkpoint_whose_theta0_is_damaged_is_refused_naming_the_checkpoint(tmp_path, capsys):
    from leap.util.files import checkpoint_path, load_checkpoint, save_checkpoint

    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY, "--meta-steps", "2", "--checkpoint-every", "1",
                 "--keep-checkpoints", "0"]) == 0
    path = checkpoint_path(run / "checkpoints", 1)
    state = load_checkpoint(path)
    name = next(k for k in state["learner"] if k.startswith("init."))
    state["learner"][name].view(-1)[0] = float("nan")
    save_checkpoint(run / "checkpoints", 1, state, keep=0)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--checkpoint", "1", "--no-progress"]) == 2
    assert capsys.readouterr().err.startswith(f"leap: error: {path}: non-finite values in")
    assert not (run / "eval-test-step-00000001.json").exists()
