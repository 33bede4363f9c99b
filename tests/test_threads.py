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
    assert choose_threads(5, small_model=True) == (5, "--threads")


def test_the_users_omp_num_threads_is_respected(no_thread_env, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose_threads(None, small_model=True) == (3, "OMP_NUM_THREADS")


@pytest.mark.parametrize("benchmark", ["builtin", "minatar", "atari"])
def test_small_models_run_single_threaded(no_thread_env, benchmark):
    from leap.experiments import registry

    assert registry.small_model(benchmark)  # as the experiments register them
    assert choose_threads(None, registry.small_model(benchmark))[0] == 1


@pytest.mark.parametrize("benchmark", ["omniglot", "multicv", None, "no-such-benchmark"])
def test_convnets_and_unknown_benchmarks_are_not_small_models(benchmark):
    from leap.experiments import registry

    assert not registry.small_model(benchmark)


def test_convnets_get_the_free_cores_never_more_than_this_process_may_use(no_thread_env, monkeypatch):
    monkeypatch.setattr(threads, "cpus_available", lambda: 8)
    monkeypatch.setattr(threads, "cpus_busy", lambda: 0.2)
    assert choose_threads(None, small_model=False) == (8, "free cores")
    monkeypatch.setattr(threads, "cpus_busy", lambda: 6.6)  # 7 cores busy with other work
    assert choose_threads(None, small_model=False)[0] == 1
    monkeypatch.setattr(threads, "cpus_busy", lambda: 40.0)
    assert choose_threads(None, small_model=False)[0] == 1  # at least one
    monkeypatch.setattr(threads, "cpus_busy", lambda: 0.0)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # four torchrun processes share the machine
    assert choose_threads(None, small_model=False)[0] == 2
    assert 1 <= cpus_available()


def test_busy_cores_are_other_processes_cpu_time_now_not_the_load_average(monkeypatch):
    # Over the window the affinity mask's 4 CPUs ran 400 ticks, 150 of them busy, 50 of which
    # were this process's own: 100 / 400 of 4 CPUs = 1 core busy with other work. A load
    # average still counting a command that just ended plays no part.
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    ticks = iter([(1000, 5000), (1150, 5400)])
    own = iter([700, 750])
    monkeypatch.setattr(threads, "_cpu_ticks", lambda cpus: next(ticks))
    monkeypatch.setattr(threads, "_own_ticks", lambda: next(own))
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (3.9, 3.9, 3.9))
    assert threads.cpus_busy(window=0.0) == pytest.approx(1.0)


def test_busy_cores_are_read_from_this_machines_proc_stat():
    if threads._cpu_ticks(set(range(1024))) is None:
        pytest.skip("no /proc/stat on this system (the load average stands in)")
    assert 0.0 <= threads.cpus_busy(window=0.05) <= cpus_available()


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
