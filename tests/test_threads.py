"""The thread policy (leap.util.threads): --threads, then OMP_NUM_THREADS, then one thread for
small models, else the free cores; torch's count is restored after a command."""

from __future__ import annotations

import pytest
import torch

from leap.cli import main
from leap.util import threads
from leap.util.threads import choose_threads, cpus_available


@pytest.fixture
def no_thread_env(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)


def test_threads_given_on_the_command_line_win(no_thread_env, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose_threads(5, "builtin") == (5, "--threads")


def test_the_users_omp_num_threads_is_respected(no_thread_env, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose_threads(None, "builtin") == (3, "OMP_NUM_THREADS")


@pytest.mark.parametrize("benchmark", ["builtin", "minatar", "atari"])
def test_small_models_run_single_threaded(no_thread_env, benchmark):
    assert choose_threads(None, benchmark)[0] == 1


def test_convnets_get_the_free_cores_never_more_than_this_process_may_use(no_thread_env, monkeypatch):
    monkeypatch.setattr(threads, "cpus_available", lambda: 8)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert choose_threads(None, "omniglot") == (8, "free cores")
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (6.6, 0.0, 0.0))  # 7 cores busy with other work
    assert choose_threads(None, "omniglot")[0] == 1
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (40.0, 0.0, 0.0))
    assert choose_threads(None, "multicv")[0] == 1  # at least one
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # four torchrun processes share the machine
    assert choose_threads(None, "omniglot")[0] == 2
    assert 1 <= cpus_available()


def test_a_command_runs_with_the_policys_threads_and_restores_torchs(no_thread_env, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr("leap.experiments.fewshot.commands.cmd_train",
                        lambda args, cfg: seen.append(torch.get_num_threads()) or 0)
    before = torch.get_num_threads()
    assert main(["train", "--out", str(tmp_path / "a"), "--threads", "3"]) == 0
    assert main(["train", "--out", str(tmp_path / "b")]) == 0  # builtin: a small model
    assert seen == [3, 1]
    assert torch.get_num_threads() == before
    assert main(["train", "--out", str(tmp_path / "c"), "--threads", "0"]) == 2
