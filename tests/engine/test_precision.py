"""Mixed precision (``--precision``, leap.engine.inner.PRECISIONS) as a specification.

bf16 runs the tasks' forward passes (and so the backward's matmuls and convolutions)
under ``torch.autocast``, batch norm in float32, with the sequential engine (the batched
engine refuses it); the parameters, their gradients, θ0 and the meta-gradient stay
float32. tf32 is a CUDA setting and is refused elsewhere.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from leap.cli import main
from leap.engine.batched import BatchedEngine, resolve_engine
from leap.engine.inner import InnerLoop, precision_context, train_task
from leap.experiments.config import RunConfig, run_matcher
from leap.learners import Leap
from leap.models import ConvNet
from leap.tasks.base import Task
from leap.util.seeding import derived_generator


def convnet() -> nn.Module:
    torch.manual_seed(0)
    return ConvNet(in_channels=1, num_classes=5, image_size=16, filters=8, running_stats=True)


def tasks(n: int = 2) -> list[Task]:
    out = []
    for i in range(n):
        g = torch.Generator().manual_seed(10 + i)
        x = (torch.rand(40, 1, 16, 16, generator=g) < 0.25).float()
        y = torch.randint(5, (40,), generator=g)
        out.append(Task(f"t{i}", x[:30], y[:30], x[30:], y[30:], 5, source=i))
    return out


def record_output_dtypes(model: nn.Module) -> list[torch.dtype]:
    """The output dtype of every convolution and linear layer, each time it runs."""
    seen: list[torch.dtype] = []
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    return seen


def meta_gradient(precision: str, engine: str) -> tuple[Leap, list[torch.dtype], nn.Module]:
    model = convnet()
    seen = record_output_dtypes(model)
    learner = Leap(model)
    loop = InnerLoop(steps=3, batch_size=10, lr=0.1, precision=precision)
    draws = [(task, derived_generator(0, "task", 0, i)) for i, task in enumerate(tasks())]
    if engine == "batched":
        BatchedEngine(model, loop).train(draws, learner)
    else:
        for task, generator in draws:
            learner.init_task()
            learner.to(model)
            train_task(model, task, loop, generator, learner)
    learner.normalize()
    return learner, seen, model


def test_bf16_runs_the_layers_in_bfloat16_and_keeps_parameters_and_meta_gradient_float32():
    learner, seen, model = meta_gradient("bf16", "sequential")
    assert seen and set(seen) == {torch.bfloat16}
    assert {b.dtype for b in model.buffers() if b.is_floating_point()} == {torch.float32}
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {p.dtype for p in learner.parameters()} == {torch.float32}
    assert {p.grad.dtype for p in learner.parameters()} == {torch.float32}
    assert all(bool(torch.isfinite(p.grad).all()) for p in learner.parameters())


@pytest.mark.parametrize("engine", ["sequential", "batched"])
def test_fp32_runs_every_layer_in_float32(engine):
    _, seen, _ = meta_gradient("fp32", engine)
    assert seen and set(seen) == {torch.float32}


def test_bf16_is_refused_by_the_batched_engine_and_auto_trains_sequentially(tmp_path, capsys):
    """torch.autocast does not reach layers under torch.func.vmap (torch 2.13): a batched
    bf16 run would silently train in float32, so it is refused and auto picks sequential."""
    with pytest.raises(ValueError, match="cannot run --precision bf16"):
        BatchedEngine(convnet(), InnerLoop(steps=1, batch_size=2, lr=0.1, precision="bf16"))
    assert resolve_engine("auto", "cuda", precision="bf16") == "sequential"
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--precision", "bf16", "--engine", "batched"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot run --precision bf16" in err[0], err
    assert not out.exists()


def test_tf32_is_refused_on_a_cpu_in_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--precision", "tf32", "--meta-steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tf32 applies to CUDA devices only" in err[0], err
    assert not out.exists()
    with pytest.raises(ValueError, match="CUDA devices only"):
        precision_context("tf32", torch.device("cpu"))


def test_a_run_directory_written_before_the_option_existed_holds_an_fp32_run():
    old = RunConfig(meta_steps=2).resolved().to_dict()
    del old["precision"]
    assert run_matcher(RunConfig(meta_steps=2).resolved())(old)
    assert not run_matcher(RunConfig(meta_steps=2, precision="bf16").resolved())(old)
