"""The paper's protocol where it is not the learner's business: how meta-batches are
drawn, how multi-headed finetuning trains, and that evaluation is not transductive."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from leap.engine import InnerLoop, inner, train_task
from leap.engine.loop import meta_step
from leap.experiments.config import RunConfig
from leap.experiments.fewshot import trainer as trainer_module
from leap.experiments.fewshot.trainer import MetaTrainer, draw_sources
from leap.models import ConvNet, reset_running_stats
from leap.tasks import BuiltinBenchmark, Task


def image_task(seed: int = 0, n_train: int = 60, n_test: int = 40) -> Task:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n_train + n_test, 1, 28, 28, generator=g) < 0.2).float()
    y = torch.randint(5, (n_train + n_test,), generator=g)
    return Task("img", x[:n_train], y[:n_train], x[n_train:], y[n_train:], 5)


def trained_convnet(running_stats: bool) -> tuple[ConvNet, Task]:
    torch.manual_seed(0)
    model = ConvNet(1, 5, 28, filters=8, running_stats=running_stats)
    task = image_task()
    train_task(model, task, InnerLoop(5, 20, 0.1), torch.Generator().manual_seed(1))
    return model, task


# ---------------------------------------------------------------------- evaluation
def test_with_running_statistics_a_test_image_is_classified_the_same_alone_or_with_the_others():
    model, task = trained_convnet(running_stats=True)
    one_at_a_time, all_at_once = inner.test_metrics(model, task, chunk=1), inner.test_metrics(model, task, chunk=1000)
    assert float(one_at_a_time[0]) == float(all_at_once[0])  # the error
    assert float(one_at_a_time[1]) == pytest.approx(float(all_at_once[1]), rel=1e-6)  # the loss, summed in other orders
    assert model.training  # evaluation leaves the model in the mode it found it in


def test_with_batch_statistics_the_other_test_images_change_the_predictions():
    # The transductive option, for contrast: the same check fails there.
    model, task = trained_convnet(running_stats=False)
    with torch.no_grad():
        in_pairs = torch.cat([model.eval()(task.test_x[i : i + 2]) for i in (0, 2)])
        together = model(task.test_x[:4])
    assert not torch.allclose(in_pairs, together, atol=1e-3)


def test_running_statistics_reset_to_their_initial_values_for_each_task():
    model, _ = trained_convnet(running_stats=True)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert any(float(m.running_mean.abs().max()) > 0 for m in norms)
    reset_running_stats(model)
    for m in norms:
        assert torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
        assert torch.equal(m.running_var, torch.ones_like(m.running_var))
        assert int(m.num_batches_tracked) == 0


# ---------------------------------------------------------------------- meta-batches
def test_meta_batches_draw_sources_without_replacement_while_the_pool_lasts():
    g = torch.Generator().manual_seed(0)
    batch = draw_sources(20, 20, g)
    assert sorted(batch) == list(range(20))  # every source once
    five = draw_sources(20, 5, g)
    assert len(set(five)) == 5
    longer = draw_sources(3, 7, g)  # more tasks than sources: whole shuffles, then a cut
    assert sorted(longer[:3]) == sorted(longer[3:6]) == [0, 1, 2]


# ---------------------------------------------------------------------- multi-headed finetuning
def finetune_trainer(meta_batch: int = 3, steps: int = 4) -> MetaTrainer:
    cfg = RunConfig(method="finetune", meta_steps=2, meta_batch=meta_batch, task_steps=steps,
                    pretrain_tasks=4).resolved()
    return MetaTrainer(cfg, BuiltinBenchmark())


def test_finetuning_interleaves_the_minibatches_of_all_tasks_of_a_meta_step(monkeypatch):
    trainer = finetune_trainer()
    seen: list[int] = []
    original = Task.sample

    def spy(task: Task, batch_size: int, generator: torch.Generator):
        seen.append(task.source)
        return original(task, batch_size, generator)

    monkeypatch.setattr(Task, "sample", spy)
    record = meta_step(trainer)
    assert sorted(seen) == sorted(s for s in set(seen) for _ in range(4))  # each task K = 4 times
    # Interleaved: some task's minibatches are not all consecutive.
    runs = sum(1 for a, b in itertools.pairwise(seen) if a != b) + 1
    assert runs > len(set(seen))
    assert record["valid_tasks"] == 3


def test_finetuning_keeps_one_head_per_source_and_a_revisited_source_starts_from_its_head(monkeypatch):
    trainer = finetune_trainer(meta_batch=4)  # the whole pool: every source in every meta-step
    fresh_heads: list[int] = []
    reset = trainer_module.reset_head
    monkeypatch.setattr(trainer_module, "reset_head",
                        lambda model, *parts: fresh_heads.append(parts[-1]) or reset(model, *parts))
    meta_step(trainer)
    assert sorted(trainer.heads) == sorted(fresh_heads) == [0, 1, 2, 3]  # a new head per source, once
    saved = {s: {k: v.clone() for k, v in h.items()} for s, h in trainer.heads.items()}
    encoder_before = {k: v.clone() for k, v in trainer.model.encoder.state_dict().items()}
    meta_step(trainer)
    assert len(fresh_heads) == 4  # the second visit re-used every head ...
    for source, head in trainer.heads.items():  # ... and trained it further
        assert not torch.equal(head["weight"], saved[source]["weight"])
    assert any(not torch.equal(v, trainer.model.encoder.state_dict()[k]) for k, v in encoder_before.items())


def test_finetuning_heads_fit_their_sources_labels():
    # With labels fixed per source, each head learns its own source: its loss there is
    # lower than another source's head on the same data.
    trainer = finetune_trainer(meta_batch=4, steps=30)
    for _ in range(3):
        meta_step(trainer)
    bench, model = trainer.benchmark, trainer.model
    own, other = [], []
    for source in range(4):
        task = bench.task("train", source, None)
        feats = model.encoder(task.train_x)
        for s, head in trainer.heads.items():
            loss = F.cross_entropy(F.linear(feats, head["weight"], head["bias"]), task.train_y)
            (own if s == source else other).append(float(loss.detach()))
    assert sum(own) / len(own) < sum(other) / len(other)
