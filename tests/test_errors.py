"""The error policy (leap.util.errors): a failure of the machine exits 1, a wrong path 2,
each with one line and no traceback (unless LEAP_DEBUG=1)."""

from __future__ import annotations

import errno
import json

import pytest

from leap.cli import main

TINY = ["train", "--meta-steps", "2", "--meta-batch", "2", "--task-steps", "3", "--no-progress"]


def failing_write(exc: BaseException):
    def write(path, data):
        raise exc
    return write


@pytest.mark.parametrize(
    "exc,code,line",
    [
        (OSError(errno.ENOSPC, "No space left on device", "/disk/run/config.json"), 1,
         "leap: error: /disk/run/config.json: no space left on the device"),
        (OSError(errno.EROFS, "Read-only file system", "/ro/run/config.json"), 1,
         "leap: error: /ro/run/config.json: read-only file system"),
        (OSError(errno.EDQUOT, "Disk quota exceeded", "/q/config.json"), 1,
         "leap: error: /q/config.json: disk quota exceeded"),
        (MemoryError(), 1, "leap: error: out of memory; use smaller batches or another device"),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 64000000000 bytes"), 1,
         "leap: error: out of memory (DefaultCPUAllocator: can't allocate memory"),
        (OSError(errno.ENAMETOOLONG, "File name too long", "/x/" + "a" * 300), 2, "file name too long"),
    ],
    ids=["disk full", "read-only", "quota", "memory", "torch's allocator", "name too long"],
)
def test_an_environment_error_is_one_line_with_its_exit_status(tmp_path, monkeypatch, capsys, exc, code, line):
    monkeypatch.delenv("LEAP_DEBUG", raising=False)
    monkeypatch.setattr("leap.engine.rundir.atomic_write_json", failing_write(exc))  # writing config.json
    assert main([*TINY, "--out", str(tmp_path / "run")]) == code
    err = capsys.readouterr().err.strip()
    assert line in err and "\n" not in err and "Traceback" not in err


def test_leap_debug_shows_the_traceback_instead(tmp_path, monkeypatch):
    monkeypatch.setenv("LEAP_DEBUG", "1")
    monkeypatch.setattr("leap.engine.rundir.atomic_write_json", failing_write(OSError(errno.ENOSPC, "No space")))
    with pytest.raises(OSError, match="No space"):
        main([*TINY, "--out", str(tmp_path / "run")])
    from leap.util.errors import UsageError

    with pytest.raises(UsageError, match="--meta-steps must be a positive integer"):
        main([*TINY, "--out", str(tmp_path / "run"), "--meta-steps", "0"])


def test_a_bug_is_not_disguised_as_an_environment_error(tmp_path, monkeypatch):
    monkeypatch.delenv("LEAP_DEBUG", raising=False)
    monkeypatch.setattr("leap.engine.rundir.atomic_write_json", failing_write(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        main([*TINY, "--out", str(tmp_path / "run")])


# ---------------------------------------------------------------------- every command x every bad output path
COMMANDS = {
    "train": ["train", *TINY[1:]],
    "compare": ["compare", "--methods", "none", *TINY[1:]],
    "sweep": ["sweep", "--methods", "none", "--pretrain-tasks", "1", "--seeds", "0", *TINY[1:]],
    "ablation": ["ablation", "--configs", "leap-p2-mu0-f1", *TINY[1:]],
    "jacobian": ["jacobian", "--synthetic", "--steps", "1", "--tasks", "1"],
}


def dangling(root):
    (root / "out").symlink_to(root / "nowhere")
    return root / "out", "leads nowhere"


def loop(root):
    (root / "out").symlink_to(root / "out")
    return root / "out" / "run", "leads nowhere"


def too_long(root):
    return root / ("a" * 300), "longer than the file system allows"


def a_file(root):
    (root / "out").write_text("not a directory")
    return root / "out", "exists and is not a directory"


def under_a_file(root):
    (root / "file").write_text("not a directory")
    return root / "file" / "run", "is not a directory"


@pytest.mark.parametrize("bad_path", [dangling, loop, too_long, a_file, under_a_file])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_refuses_a_bad_output_path_with_one_line_and_writes_nothing(tmp_path, capsys, command,
                                                                                    bad_path):
    out, reason = bad_path(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main([*COMMANDS[command], "--out", str(out)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("leap: error: ") and reason in err and "\n" not in err, err
    assert captured.out == ""  # no progress or result printed: nothing ran
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("entry,kind", [("checkpoints", "file"), ("init.safetensors", "dir"),
                                        ("metrics.jsonl", "dir"), ("eval-test.json", "dir")])
@pytest.mark.parametrize("command", ["train", "compare"])
def test_an_output_entry_in_the_way_is_refused_before_any_training(tmp_path, capsys, command, entry, kind):
    out = tmp_path / "out"
    run = out / "leap" if command == "compare" else out
    run.mkdir(parents=True)
    (run / entry).mkdir() if kind == "dir" else (run / entry).write_text("in the way")
    argv = ["compare", "--methods", "leap", *TINY[1:]] if command == "compare" else COMMANDS["train"]
    assert main([*argv, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == (f"leap: error: {run / entry} is in the way: leap writes a "
                                    f"{'folder' if entry == 'checkpoints' else 'file'} there; move it or use another "
                                    "--out")
    assert captured.out == "" and sorted(p.name for p in run.iterdir()) == [entry]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_refuses_an_out_of_range_value_with_one_line_and_writes_nothing(tmp_path, capsys, command):
    argv = [*COMMANDS[command], "--out", str(tmp_path / "run")]
    flag, value = ("--steps", "0") if command == "jacobian" else ("--meta-steps", "0")
    assert main([*argv, flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"leap: error: {flag} must be ") and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_a_base_install_refuses_a_command_that_needs_the_cli_extra_before_any_work(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    assert main(["compare", *TINY[1:], "--out", str(tmp_path / "cmp")]) == 2
    assert capsys.readouterr().err.strip() == (
        "leap: error: leap compare needs matplotlib: pip install 'leap-metalearning[cli]' (from a checkout: "
        "pip install '.[cli]')")
    assert not (tmp_path / "cmp").exists()


def test_version_answers_without_importing_torch():
    import subprocess
    import sys

    probe = "import sys; from leap.console import main; main(['--version']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60).stdout.split()
    import leap

    assert out == ["leap", leap.__version__, "False"]


def test_version(capsys):
    import leap

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"leap {leap.__version__}"


@pytest.mark.parametrize("exc,line", [
    (OSError(errno.ENOSPC, "No space left on device", "/disk/f"), "leap: error: /disk/f: no space left on the device"),
    (OSError(errno.EROFS, "Read-only file system", "/ro/f"), "leap: error: /ro/f: read-only file system"),
    (MemoryError(), "leap: error: out of memory"),
], ids=["disk full", "read-only", "memory"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_reports_a_failing_machine_in_one_line_with_exit_1(tmp_path, capsys, monkeypatch, command,
                                                                          exc, line):
    monkeypatch.delenv("LEAP_DEBUG", raising=False)
    monkeypatch.setattr("leap.util.files.atomic_write_bytes", failing_write(exc))  # every file leap writes
    assert main([*COMMANDS[command], "--out", str(tmp_path / "run")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    # The error is one line, the last; before it at most a log of which run was starting.
    assert lines[-1].startswith(line) and sum("error" in entry for entry in lines) == 1
    assert "Traceback" not in "\n".join(lines) and len(lines) <= 2


# ---------------------------------------------------------------------- numbers, records and paths (issue 31)
@pytest.mark.parametrize("argv,env,line", [
    (["--threads", "100000"], {}, "--threads must be an integer >= 1 and <= 1024, got 100000"),
    ([], {"OMP_NUM_THREADS": "100000"}, "OMP_NUM_THREADS=100000: at most 1024 threads"),
    (["--dist-timeout", "1e20"], {}, "--dist-timeout must be > 0 and <= 2.592e+06, got 1e+20"),
], ids=["threads", "OMP_NUM_THREADS", "dist-timeout"])
def test_a_number_beyond_its_bound_is_one_line_with_exit_2_not_a_crash(tmp_path, capsys, monkeypatch, argv, env,
                                                                       line):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main([*TINY, "--out", str(tmp_path / "run"), *argv]) == 2
    assert capsys.readouterr().err.strip() == f"leap: error: {line}"
    assert not (tmp_path / "run").exists()


def _damage_rl_eval(d):
    (d / "rl-eval.json").write_text("{not json")
    return d / "rl-eval.json"


def _damage_ablation(d):
    (d / "ablation.json").write_text("[]")
    return d / "ablation.json"


def _damage_jacobian(d):
    (d / "jacobian.json").write_text('{"runs": []}')
    return d / "jacobian.json"


@pytest.mark.parametrize("damage", [_damage_rl_eval, _damage_ablation, _damage_jacobian])
def test_report_on_a_damaged_record_is_one_line_naming_the_file(tmp_path, capsys, damage):
    path = damage(tmp_path)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"leap: error: {path}: ") and "\n" not in err, err


def test_evaluate_names_the_missing_path_and_refuses_options_an_rl_run_does_not_take(tmp_path, capsys):
    missing = tmp_path / "runs" / "missing"
    assert main(["evaluate", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == f"leap: error: {missing}: no such run directory or init file"
    run = tmp_path / "rl"
    run.mkdir()
    from leap.experiments.config import RunConfig

    (run / "config.json").write_text(json.dumps(RunConfig(benchmark="minatar").resolved().to_dict()))
    assert main(["evaluate", str(run), "--split", "val", "--engine", "batched"]) == 2
    assert capsys.readouterr().err.strip() == (
        "leap: error: --split, --engine: not options of an RL run's evaluation (agents trained on games)")
    assert sorted(p.name for p in run.iterdir()) == [".lock", "config.json"]


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_leap_writes_honour_the_umask(tmp_path, umask, mode):
    import os

    from leap.util.files import atomic_write_text

    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "results.md", "a table")
    finally:
        os.umask(previous)
    assert (tmp_path / "results.md").stat().st_mode & 0o777 == mode


def test_a_cache_write_a_killed_process_left_is_removed_and_a_live_one_kept(tmp_path):
    import os
    import time

    from leap.tasks.cache import ABANDONED_AFTER_S, read_cache

    cache = tmp_path / "omniglot-abc.npz"
    abandoned, live = tmp_path / ".omniglot-abc.npz.x1y2.tmp", tmp_path / ".omniglot-abc.npz.z3w4.tmp"
    for temp in (abandoned, live):
        temp.write_bytes(b"part of a cache")
    old = time.time() - ABANDONED_AFTER_S - 60
    os.utime(abandoned, (old, old))
    assert read_cache(cache, "key", lambda arrays: arrays, "Omniglot") is None
    assert not abandoned.exists() and live.exists()


@pytest.mark.parametrize("argv,line", [
    (["train", "--method", "lep", "--out", "x"],
     "leap: error: argument --method: invalid choice: 'lep' (did you mean 'leap'?) (see 'leap train --help')"),
    (["trian"],
     "leap: error: argument command: invalid choice: 'trian' (did you mean 'train'?) (see 'leap --help')"),
    (["train"], "leap: error: the following arguments are required: --out (see 'leap train --help')"),
])
def test_a_usage_error_is_one_line_with_a_pointer_to_help_and_a_near_miss_suggested(tmp_path, capsys, argv, line):
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2 and capsys.readouterr().err == line + "\n"
