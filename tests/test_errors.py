"""The error policy (leap.util.errors): a failure of the machine exits 1, a wrong path 2,
each with one line and no traceback (unless LEAP_DEBUG=1)."""

from __future__ import annotations

import errno

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
