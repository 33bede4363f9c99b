"""The study of Figure 5: the Jacobian along training runs, saved run by run (resumable)."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from leap.engine.rundir import RunMatcher, check_out_dir
from leap.experiments.analysis.jacobian.blocks import Batch, first_layer, relative_precision, sgd_block_jacobians
from leap.experiments.analysis.jacobian.protocol import JacobianProtocol
from leap.experiments.analysis.jacobian.report import write_jacobian_report
from leap.models import ConvNet
from leap.tasks.base import Task
from leap.util.errors import CorruptFileError, UsageError
from leap.util.files import atomic_write_json, read_json_record
from leap.util.seeding import derive_seed, derived_generator


# ---------------------------------------------------------------------- the study
class SyntheticImages:
    """Random pixels and random labels shaped like Omniglot tasks (20 classes, 28x28).
    Only for smoke tests and timing: it is not the paper's data and results say so."""

    name = "synthetic"
    num_classes = 20

    def num_sources(self, split: str) -> int:
        return 1000

    def task(self, split: str, source: int, generator: torch.Generator, task_seed: int = 0) -> Task:
        x = torch.rand(300, 1, 28, 28, generator=generator)
        y = torch.randint(self.num_classes, (300,), generator=generator)
        return Task(name=f"synthetic-{source}", train_x=x, train_y=y, test_x=x[:0], test_y=y[:0],
                    num_classes=self.num_classes, source=source)


def study_model(protocol: JacobianProtocol, task_index: int, device: str) -> nn.Module:
    """The appendix D ConvNet with a random initialization of its own per task (seeded),
    in training mode (batch statistics). The same init serves every learning rate."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(protocol.seed, "jacobian-init", task_index))
        model = ConvNet(in_channels=1, num_classes=20, image_size=28, filters=protocol.filters)
    return model.to(device).train()


def study_batches(benchmark: Any, protocol: JacobianProtocol, task_index: int, device: str) -> tuple[Task, list[Batch]]:
    """Task ``task_index`` of the split and its K fixed (augmented) minibatches, drawn
    once and shared by every learning rate."""
    generator = derived_generator(protocol.seed, "jacobian", protocol.split, task_index)
    task = benchmark.task(protocol.split, task_index, generator)
    batches = [task.sample(protocol.batch, generator) for _ in range(protocol.steps)]
    return task, [(x.to(device), y.to(device)) for x, y in batches]


STUDY_FILE = "jacobian.json"  # the study's record: its protocol and every (task, lr) measured so far


def protocol_matcher(protocol: JacobianProtocol) -> RunMatcher:
    """Whether a jacobian.json was measured under ``protocol`` (see
    `JacobianProtocol.identity()`), for [`leap.engine.rundir.holds_run()`][leap.engine.rundir.holds_run]."""
    def matches(previous: dict[str, Any]) -> bool:
        return JacobianProtocol(**previous["protocol"]).identity() == protocol.identity()
    return matches


def load_runs(out: Path, protocol: JacobianProtocol) -> list[dict[str, Any]]:
    """The (task, lr) results already in ``out``/jacobian.json (none if absent) that this
    protocol asks for; a study under another protocol is refused
    ([`leap.engine.rundir.check_out_dir()`][leap.engine.rundir.check_out_dir])."""
    path = Path(out) / STUDY_FILE
    if not path.exists():
        return []
    check_out_dir(Path(out), protocol_matcher(protocol), overwrite=False, record=STUDY_FILE)
    try:
        previous = read_json_record(path, ("runs",))
    except CorruptFileError as err:
        raise UsageError(str(err)) from err
    return [r for r in previous.get("runs", []) if r["task"] < protocol.tasks and r["lr"] in protocol.lrs]


def run_study(
    benchmark: Any,
    protocol: JacobianProtocol,
    out: Path,
    device: str = "cpu",
    chunk: int = 32,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure ρ_i for every (task, learning rate) and write ``out``/jacobian.json,
    jacobian.md and jacobian.png. Resumable: pairs already in jacobian.json (same
    protocol) are skipped, and the file is rewritten after every pair, so an interrupted
    study loses at most the pair in flight. Tasks run in order, each with every
    learning rate, so a partial study covers all learning rates."""
    protocol.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = load_runs(out, protocol)
    have = {(r["task"], r["lr"]) for r in runs}
    probe = study_model(protocol, 0, "cpu")
    block = first_layer(probe)
    sizes = dict(probe.named_parameters())
    block_info = {"parameters": block, "size": sum(sizes[n].numel() for n in block)}
    # The study's record first: a directory that cannot be written fails now, not after the compute.
    atomic_write_json(out / "jacobian.json", _result(protocol, runs, block_info, device, chunk))
    for t in range(protocol.tasks):
        pending = [lr for lr in protocol.lrs if (t, lr) not in have]
        if not pending:
            continue
        model = study_model(protocol, t, device)
        task, batches = study_batches(benchmark, protocol, t, device)
        params = {n: p.detach() for n, p in model.named_parameters()}
        for lr in pending:
            start = time.perf_counter()
            label = f"task {t} ({task.name}) lr {lr}"

            def progress(i: int, d: Tensor, label: str = label, start: float = start) -> None:
                if i in protocol.reported_steps():
                    log(f"{label}: step {i}/{protocol.steps} rho {relative_precision(d):.3e} "
                        f"({time.perf_counter() - start:.0f} s)")

            deviations = sgd_block_jacobians(model, params, batches, lr, block, chunk, on_step=progress)
            runs.append({
                "task": t, "alphabet": task.name, "lr": lr,
                "rho": [relative_precision(d) for d in deviations],
                "max_abs_deviation": [float(d.abs().max()) for d in deviations],
                "seconds": time.perf_counter() - start,
            })
            atomic_write_json(out / "jacobian.json", _result(protocol, runs, block_info, device, chunk))
    result = _result(protocol, runs, block_info, device, chunk)
    atomic_write_json(out / "jacobian.json", result)
    write_jacobian_report(out)
    return result


def _result(protocol: JacobianProtocol, runs: list[dict[str, Any]], block: dict[str, Any], device: str,
            chunk: int) -> dict[str, Any]:
    summary: dict[str, dict[str, list[float]]] = {}
    for lr in protocol.lrs:
        rows = [r["rho"] for r in runs if r["lr"] == lr]
        if not rows:
            continue
        values = torch.tensor(rows, dtype=torch.float64)  # (tasks, K)
        summary[repr(lr)] = {
            "mean": values.mean(0).tolist(),
            "std": values.std(0, unbiased=False).tolist(),
            "min": values.min(0).values.tolist(),
            "max": values.max(0).values.tolist(),
            "tasks": len(rows),
        }
    return {
        "protocol": asdict(protocol),
        "block": block,
        "runs": runs,
        "summary": summary,
        "environment": {
            "device": device, "chunk": chunk, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "machine": platform.machine(), "processor": platform.processor() or "unknown",
        },
    }
