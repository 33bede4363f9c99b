"""Distributed meta-training (torchrun, gloo on CPU): same result as one process, clean failures."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import leap
from helpers.torchrun import (
    FAULT_INJECTION,
    LIMIT_S,
    assert_same_records,
    fault_env,
    finish,
    free_port,
    launch,
    max_abs_diff,
    records,
    stop,
    torchrun,
)
from leap.cli import main
from leap.models import MLP
from leap.util import distributed

# Meta-batch 3 over 2 ranks: an uneven split (2 + 1 tasks).
BUDGET = ["--meta-steps", "3", "--meta-batch", "3", "--task-steps", "10", "--no-progress"]
EXTRA = {"leap": ["--val-every", "3", "--eval-steps", "5"], "reptile": []}


def train_args(method: str, out: Path, *more: str) -> list[str]:
    return ["train", "--method", method, "--out", str(out), *BUDGET, *EXTRA[method], *more]


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict[str, Path]:
    """One-process reference runs (in this process: no interpreter start-up)."""
    root = tmp_path_factory.mktemp("single")
    for method in EXTRA:
        assert main(train_args(method, root / method)) == 0
    return {method: root / method for method in EXTRA}


# ---------------------------------------------------------------------- the split
@pytest.mark.parametrize("n, world", [(3, 2), (5, 3), (2, 4), (8, 2)])
def test_shards_are_contiguous_cover_every_task_once_and_differ_in_size_by_at_most_one(n, world):
    shards = [distributed.shard(range(n), r, world) for r in range(world)]
    assert [i for s in shards for i in s] == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert [len(s) for s in shards] == sorted((len(s) for s in shards), reverse=True)


def test_without_torchrun_every_helper_acts_as_a_world_of_one():
    assert not distributed.active()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.shard([7, 8, 9]) == [7, 8, 9]
    assert distributed.broadcast_from_main({"a": 1}) == {"a": 1}
    assert distributed.prefix() == ""


# ---------------------------------------------------------------------- normalize(reduce=...)
def train_tasks(learner: leap.MetaLearner, model: torch.nn.Module, seeds: list[int]) -> None:
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        learner.init_task()
        learner.to(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(4):
            loss = F.cross_entropy(model(torch.randn(8, 5, generator=g)), torch.randint(3, (8,), generator=g))
            loss.backward()
            learner.update(loss, model)
            opt.step()
            opt.zero_grad()
        learner.end_task(model, loss.detach())


@pytest.mark.parametrize("cls", [leap.Leap, leap.Reptile])
def test_normalize_with_a_summing_reduce_takes_the_mean_over_every_process_tasks(cls):
    # Two "ranks" in one process: rank 0 trains tasks 0 and 1, rank 1 task 2; rank 0's
    # reduce adds rank 1's accumulators and count, as an all-reduce would.
    learners = []
    for share in ([0, 1], [2], [0, 1, 2]):
        torch.manual_seed(0)
        model = MLP(5, 3, hidden=8)
        learner = cls(model)
        train_tasks(learner, model, share)
        learners.append(learner)
    rank0, rank1, alone = learners
    state = rank1.state_dict()
    others = [state[f"acc.{n}"] for n in rank1.param_names] + [state["valid_tasks"]]

    def reduce(tensors: list[torch.Tensor]) -> None:
        for t, other in zip(tensors, others, strict=True):
            t.add_(other)

    assert int(rank0.normalize(reduce)) == int(alone.normalize()) == 3
    for a, b in zip(rank0.parameters(), alone.parameters(), strict=True):
        assert torch.equal(a.grad, b.grad)  # (t0 + t1) + t2 in both: the same float sum


def test_a_process_without_tasks_may_normalize_when_it_reduces_but_not_alone():
    learner = leap.Leap(MLP(5, 3, hidden=8))
    with pytest.raises(RuntimeError, match="before any init_task"):
        learner.normalize()
    assert int(learner.normalize(lambda tensors: tensors[-1].add_(2))) == 2


# ---------------------------------------------------------------------- same run as one process
@pytest.mark.parametrize("method", ["leap", "reptile"])
def test_two_processes_learn_the_init_of_one_process_and_only_rank_0_writes(tmp_path, single, method):
    out = tmp_path / "run"
    proc = subprocess.run(torchrun("-m", "leap", *train_args(method, out)), capture_output=True, text=True,
                          timeout=LIMIT_S)
    assert proc.returncode == 0, proc.stderr
    assert max_abs_diff(out, single[method]) < 1e-5
    # Rank 0 alone wrote metrics: one line per meta-step, with the global means (and, for
    # leap, the validation error of tasks evaluated half on each rank).
    got, want = records(out), records(single[method])
    assert [r["step"] for r in got] == [1, 2, 3]
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        assert all(g[k] == pytest.approx(w[k], abs=1e-6) for k in w)
    assert "[rank 0/2]" in proc.stderr and "[rank 1/2]" in proc.stderr
    assert proc.stdout.count("wrote") == 1


def test_two_nodes_of_one_process_each_meeting_at_a_c10d_rendezvous_learn_the_init_of_one_process(tmp_path, single):
    # Multi-node use as docs/distributed.md gives it, on one machine: two torchrun
    # invocations (two "nodes", one process each) meet at a c10d rendezvous on localhost.
    out, port = tmp_path / "run", free_port()
    node = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "leap-test",
            "-m", "leap", *train_args("reptile", out)]
    procs = [subprocess.Popen(node, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    deadline = time.monotonic() + 2 * LIMIT_S
    try:
        outputs = [proc.communicate(timeout=max(0.1, deadline - time.monotonic())) for proc in procs]
    finally:
        stop(procs)
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    assert max_abs_diff(out, single["reptile"]) < 1e-5
    assert_same_records(records(out), records(single["reptile"]))
    assert sum(stdout.count("wrote") for stdout, _ in outputs) == 1  # rank 0, on one of the nodes


def test_ranks_launched_with_different_options_are_refused_before_rank_0_writes_anything(tmp_path):
    out = tmp_path / "run"
    # Each rank gets its own seed, as two nodes started with different arguments would.
    script = tmp_path / "rank_seed.py"
    script.write_text("import os, sys\nfrom leap.cli import main\n"
                      f"sys.exit(main({train_args('reptile', out)!r} + ['--seed', os.environ['RANK']]))\n")
    proc = subprocess.run(torchrun(str(script)), capture_output=True, text=True, timeout=LIMIT_S)
    assert proc.returncode != 0
    for rank in (0, 1):
        assert f"[rank {rank}/2] the run configuration differs from that of rank(s) [{1 - rank}]" in proc.stderr
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="lists threads through Linux's /proc")
def test_no_process_group_thread_outlives_a_finished_run(tmp_path):
    # A gloo worker thread alive while the interpreter finalizes can abort its rank at exit
    # (SIGABRT, "terminate called without an active exception"; issue 18): after leap's
    # shutdown the process group must be gone, threads included, on every rank. A run
    # imports torch._dynamo after the process group exists (the memory estimate's meta
    # forward, the first optimizer), which is what used to keep the group alive.
    env = {**os.environ, "LEAP_REPORT_THREADS": "1"}
    proc = subprocess.run(torchrun(str(FAULT_INJECTION), *train_args("reptile", tmp_path / "run")),
                          capture_output=True, text=True, timeout=LIMIT_S, env=env)
    assert proc.returncode == 0, proc.stderr
    # Searched in the whole output, not line by line: two ranks' writes may still interleave.
    reports = re.findall(r"rank \d threads after the command: \[[^\]]*\]", proc.stderr)
    assert len(reports) == 2, proc.stderr
    for report in reports:
        assert "gloo" not in report, report


# ---------------------------------------------------------------------- failures
def test_a_rank_that_raises_makes_every_rank_exit_nonzero_in_bounded_time_and_the_run_resumes(tmp_path, single):
    out = tmp_path / "run"
    # The collective timeout is far longer than the limit: rank 0 must learn of rank 1's
    # exit from the closed connection, at once, not by waiting the timeout out.
    args = train_args("leap", out, "--checkpoint-every", "1", "--dist-timeout", str(10 * LIMIT_S))
    (status0, err0), (status1, err1) = finish(launch(args, fault_env("raise", rank=1, step=2)), LIMIT_S)
    assert status1 == 1 and "injected failure before meta-step 2" in err1, err1  # an exit code, not a signal
    assert status0 == 1 and "[rank 0/2] all-reduce failed: another rank stopped" in err0, err0
    assert not (out / "init.safetensors").exists()
    # Rank 0 checkpointed meta-step 1 before the failure; resuming (rank 0 reads the
    # checkpoint and sends it to rank 1) finishes the same run as one process.
    (status0, err0), (status1, err1) = finish(launch([*args, "--resume"], dict(os.environ)), LIMIT_S)
    assert status0 == status1 == 0, err0 + err1
    assert "[rank 1/2] leap: resuming from" in err1 and "(meta-step 1)" in err1
    assert max_abs_diff(out, single["leap"]) < 1e-5
    assert [r["step"] for r in records(out)] == [1, 2, 3]


def test_a_rank_that_hangs_makes_the_others_fail_with_a_clear_error_after_the_timeout(tmp_path):
    procs = launch(train_args("reptile", tmp_path / "run", "--dist-timeout", "3"), fault_env("hang", rank=1, step=2))
    try:
        _, err = procs[0].communicate(timeout=LIMIT_S)
        assert procs[0].returncode == 1, err  # on failure, show what rank 0 printed (e.g. a native abort)
        assert "[rank 0/2]" in err and "did not reach it within the 3 s timeout" in err
        assert procs[1].poll() is None  # still stuck: only the timeout freed rank 0 (torchrun would stop rank 1)
    finally:
        stop(procs)
