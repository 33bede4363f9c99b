"""Learning on the built-in benchmark: Leap's init trains held-out tasks faster than a random one."""

from __future__ import annotations

import math

from leap.engine.evaluation import evaluate
from leap.engine.loop import meta_step
from leap.experiments.config import RunConfig
from leap.experiments.fewshot.trainer import MetaTrainer, eval_loop
from leap.tasks import make_benchmark


def test_leap_init_beats_random_init_on_held_out_tasks():
    cfg = RunConfig(method="leap", meta_steps=30, meta_batch=5, task_steps=30, eval_steps=30).resolved()
    benchmark = make_benchmark("builtin")
    trainer = MetaTrainer(cfg, benchmark)
    random_init = trainer.init_state()
    for _ in range(cfg.meta_steps):
        metrics = meta_step(trainer)
        assert math.isfinite(metrics["train_loss"]) and metrics["valid_tasks"] == cfg.meta_batch
    learned = evaluate(benchmark, trainer.init_state(), eval_loop(cfg), seed=0)
    baseline = evaluate(benchmark, random_init, eval_loop(cfg), seed=0)
    # Paired comparison on the 10 held-out tasks: same tasks, same minibatches.
    assert learned.test_error < baseline.test_error - 0.10, (learned.test_error, baseline.test_error)
    assert learned.auc < baseline.auc - 0.10, (learned.auc, baseline.auc)
    wins = sum(a < b for a, b in zip(learned.test_errors, baseline.test_errors))
    assert wins >= 8
