"""Leap on a transformer in your own training loop: AdamW, gradient clipping and (optionally)
bfloat16 autocast, with the hook's three calls where it watches.

Each task is character-level language modelling of one package of the standard library
(``leap.tasks.text``: nothing to download), the model a small causal transformer
(``leap.models.CharTransformer``). Leap meta-learns the whole initialization from the
tasks' training paths; the held-out packages are then trained from Leap's θ0 and from a
random init with the same batches, and the script prints both: the mean training loss over
the steps (the AUC of the loss curve: how fast each trains) and the test loss at the end.

    python examples/transformer_loop.py                 # 20 meta-steps x 2 packages x 200 steps
    python examples/transformer_loop.py --quick         # 14 s (the tests run this)
    python examples/transformer_loop.py --precision fp32

``--precision auto`` (the default) autocasts the forward passes to bfloat16 where the CPU
says it has bfloat16 arithmetic (AVX-512 BF16 or AMX in /proc/cpuinfo), float32 elsewhere.
Measured on the 2-core AMD EPYC VM (AVX-512 BF16), one thread, under load: a training step
of the full model (width 128, batch 8, 128 bytes) takes 33 ms in bfloat16 against 55 ms in
float32; on a CPU without bfloat16 arithmetic it was not measured. θ0, the optimizer states
and Leap's meta-gradient stay float32 either way. ``--quick`` printed, on that machine (14 s):
mean training loss over 30 steps 2.92 from Leap's θ0 against 4.22 from the random init,
final test loss 2.78 against 3.22.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import leap
from leap.models import CharTransformer
from leap.tasks.text import StdlibTextBenchmark
from leap.util.threads import thread_policy


def train(model: CharTransformer, task, steps: int, generator: torch.Generator, bf16: bool,
          learner: leap.Leap | None = None) -> list[float]:
    """The user's loop: AdamW and clipping on every parameter; the hook's calls where it
    watches (``update`` after backward, ``end_task`` with the loss at the end). Returns
    the training losses."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    losses = []
    model.train()
    for _ in range(steps):
        x, y = task.sample(8, generator)
        with autocast:
            logits = model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        if learner is not None:
            learner.update(loss, model)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    if learner is not None:
        x, y = task.sample(8, generator)
        with torch.no_grad(), autocast:
            final = F.cross_entropy(model(x).float().flatten(0, 1), y.flatten())
        learner.end_task(model, final)
    return losses


def cpu_has_bf16() -> bool:
    """Whether the CPU reports bfloat16 arithmetic (Linux; False where it cannot tell)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@torch.no_grad()
def test_loss(model: CharTransformer, task) -> float:
    model.eval()
    return F.cross_entropy(model(task.test_x).flatten(0, 1), task.test_y.flatten()).item()


def held_out(init: dict[str, torch.Tensor], bench: StdlibTextBenchmark, tasks: int, steps: int, bf16: bool,
             config: dict) -> tuple[float, float]:
    """(mean training loss over the steps, final test loss), averaged over held-out packages."""
    aucs, finals = [], []
    for source in range(tasks):
        model = CharTransformer(**config)
        model.load_state_dict(init)
        task = bench.task("test", source)
        losses = train(model, task, steps, torch.Generator().manual_seed(100 + source), bf16)
        aucs.append(sum(losses) / len(losses))
        finals.append(test_loss(model, task))
    return sum(aucs) / tasks, sum(finals) / tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short run (seconds), as the tests use")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="forward passes in bfloat16 (autocast) or float32; auto: bf16 where the CPU has it")
    args = parser.parse_args()
    args.bf16 = args.precision == "bf16" or (args.precision == "auto" and cpu_has_bf16())
    if args.quick:
        meta_steps, steps, eval_tasks, config = 4, 30, 2, dict(width=64, layers=2, heads=4, context=64)
    else:
        meta_steps, steps, eval_tasks, config = 20, 200, 6, dict(width=128, layers=2, heads=4, context=128)
    bench = StdlibTextBenchmark(context=config["context"])
    torch.manual_seed(0)
    model = CharTransformer(**config)
    random_init = {k: v.clone() for k, v in model.state_dict().items()}
    learner = leap.Leap(model, metric="length")
    meta_opt = torch.optim.Adam(learner.parameters(), lr=0.01)  # the README's rule for the meta-optimizer
    generator = torch.Generator().manual_seed(1)
    start = time.perf_counter()
    for step in range(1, meta_steps + 1):
        paths = []
        for _ in range(2):  # packages per meta-step
            task = bench.task("train", int(torch.randint(bench.num_sources("train"), (), generator=generator)))
            learner.init_task()
            learner.to(model)  # every task starts from θ0
            train(model, task, steps, generator, args.bf16, learner)
            paths.append(learner.last_path)
        learner.normalize()
        meta_opt.step()
        meta_opt.zero_grad()
        print(f"meta-step {step}/{meta_steps}: mean path length {sum(paths) / len(paths):.3f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    learner.to(model)
    print(f"precision: {'bf16' if args.bf16 else 'fp32'}")
    learned = held_out(model.state_dict(), bench, eval_tasks, steps, args.bf16, config)
    baseline = held_out(random_init, bench, eval_tasks, steps, args.bf16, config)
    print(f"leap: held-out mean training loss over {steps} steps {learned[0]:.3f} (random init: {baseline[0]:.3f}), "
          f"final test loss {learned[1]:.3f} (random init: {baseline[1]:.3f})")


if __name__ == "__main__":
    with thread_policy(None, small_model=False):
        main()
