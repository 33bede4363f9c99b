"""A run's memory, estimated before anything is written (so a size far beyond the machine
is one line, not a MemoryError after config.json exists).

The estimate is an upper bound of the right order, not an accounting: the activations
every module of the model outputs for one example, measured by a forward pass on the
``meta`` device (no memory, no compute), times the batch, times 3 (the forward values
autograd keeps, their gradients, and the optimizer's temporaries); plus the parameters,
their gradients and two optimizer buffers for every task trained at once.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from torch import Tensor, nn

GIB = 2**30


def per_example_activation_bytes(model: nn.Module, example: Tensor) -> int:
    """Bytes of every module's output for ONE example (``example``: a batch of one)."""
    meta_model = copy.deepcopy(model).to("meta")
    total = 0

    def count(module: nn.Module, inputs: tuple, output: object) -> None:
        nonlocal total
        if isinstance(output, Tensor):
            total += output.numel() * output.element_size()

    handles = [m.register_forward_hook(count) for m in meta_model.modules()]
    try:
        with torch.no_grad():
            # Two examples: batch norm in training mode refuses a batch of one.
            meta_model(example[:1].to("meta").expand(2, *example.shape[1:]))
    finally:
        for h in handles:
            h.remove()
    return total // 2


def estimate_bytes(model: nn.Module, example: Tensor, batch: int, tasks_at_once: int = 1) -> int:
    """Peak memory of training ``tasks_at_once`` tasks with minibatches of ``batch``."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    activations = per_example_activation_bytes(model, example) + example[:1].numel() * example.element_size()
    return tasks_at_once * (3 * batch * activations + 4 * params)


def available_bytes(device: torch.device | str) -> int | None:
    """Memory the device has (CUDA: free now; CPU: physical), None when unknown."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0])
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(what: str, needed: int, device: torch.device | str,
               advice: str = "use smaller batches (or --max-tasks-per-chunk)") -> None:
    """Raise ``ValueError`` naming ``what`` (and ending with ``advice``) when ``needed``
    bytes exceed the device's memory."""
    have = available_bytes(device)
    if have is not None and needed > have:
        raise ValueError(f"{what} needs about {needed / GIB:.1f} GiB of memory; {torch.device(device).type} has "
                         f"{have / GIB:.1f} GiB: {advice}")


def reset_peak_resident() -> bool:
    """Start this process's peak resident memory again from what it holds now (Linux: "5"
    written to /proc/self/clear_refs resets VmHWM), so that `peak_resident_mib()` reads the
    peak of what follows, e.g. one run of a ``leap sweep`` that runs many in one process.
    Returns False where it cannot (another OS, no permission): the peak is then the
    process's since it started."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_resident_mib() -> float:
    """The peak resident memory of this process, in MiB: since the last
    `reset_peak_resident()` (VmHWM in /proc/self/status), else since it started
    (``ru_maxrss``: KiB on Linux, bytes on macOS). [`fit`][leap.engine.loop.fit] resets it as
    a run starts and records it after every meta-step (``peak_resident_mib``). It counts
    the whole process (Python, torch, the data), not CUDA memory; under torchrun, rank 0's."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
