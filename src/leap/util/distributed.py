"""Meta-training over several processes with ``torch.distributed`` (launched by torchrun).

Leap's meta-gradient is a mean over tasks, and each task's contribution comes from that
task's own training run, so tasks are the unit of work: every rank trains a contiguous
share of each meta-batch, accumulates the sum of its tasks' contributions and the count of
valid tasks, and one all-reduce (sum) over all ranks gives every rank the same total,
which it divides by the global count before the same meta-step. Task data comes from
generators derived from (seed, meta-step, task index) ([`leap.util.seeding`][leap.util.seeding]), so which rank
trains a task does not change what it sees.

When the process was not started by torchrun (no ``WORLD_SIZE`` > 1 in the environment)
or [`setup()`][leap.util.distributed.setup] was not called, every helper here behaves as the single process of a
world of one: ``rank() == 0``, ``shard`` keeps everything, reductions do nothing.

Collectives run with a timeout, so a rank that dies or hangs turns into a
[`DistributedError`][leap.util.distributed.DistributedError] on the others instead of a job that waits forever.

torch is imported by the helpers that need it, not with this module: what the command
line asks of every run ([`launched()`][leap.util.distributed.launched], [`prefix()`][leap.util.distributed.prefix],
[`shutdown()`][leap.util.distributed.shutdown], also after ``--help``) reads the environment, and no process group
can exist before torch.distributed is imported.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch
    from torch import Tensor

T = TypeVar("T")

#: Seconds a collective (or the initial rendezvous) may wait for the other ranks.
DEFAULT_TIMEOUT_S = 300.0
#: The longest wait allowed (30 days): far beyond any collective, and within what a
#: datetime.timedelta (the process group's timeout) can hold.
MAX_TIMEOUT_S = 30 * 86400.0

_timeout_s = DEFAULT_TIMEOUT_S


class DistributedError(RuntimeError):
    """A collective failed: another rank stopped, or did not reach it before the timeout."""


# ---------------------------------------------------------------------- environment
def launched() -> bool:
    """Whether this process is one of several started by torchrun (``WORLD_SIZE`` > 1)."""
    return _env_int("WORLD_SIZE", 1) > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from err


def launch_rank() -> int:
    """This process's rank from torchrun's environment (0 when not launched by it): known
    before [`setup()`][leap.util.distributed.setup], e.g. to let rank 0 alone take a run directory's lock first."""
    return _env_int("RANK", 0) if launched() else 0


def active() -> bool:
    """Whether a process group is initialized (collectives are real). Without torch.distributed
    imported there is none, and this does not import it."""
    dist = sys.modules.get("torch.distributed")
    return dist is not None and dist.is_available() and dist.is_initialized()


def rank() -> int:
    if not active():
        return 0
    import torch.distributed as dist

    return dist.get_rank()


def world_size() -> int:
    if not active():
        return 1
    import torch.distributed as dist

    return dist.get_world_size()


def is_main() -> bool:
    """Rank 0: the only process that writes files and prints results."""
    return rank() == 0


def prefix() -> str:
    """``"[rank r/N] "`` for log lines when several processes run, else empty (also before
    [`setup()`][leap.util.distributed.setup], from torchrun's environment, so early errors say which rank failed)."""
    if active():
        return f"[rank {rank()}/{world_size()}] "
    if launched():
        return f"[rank {_env_int('RANK', 0)}/{_env_int('WORLD_SIZE', 1)}] "
    return ""


# ---------------------------------------------------------------------- set-up and shutdown
def check_rank_device(device: str) -> None:
    """Refuse device strings that cannot work with several processes.

    Every rank must resolve the same configured device to its own GPU, so an explicit
    ``cuda:N`` is refused (all ranks would share GPU N); ``cuda`` means ``cuda:LOCAL_RANK``.
    """
    if not launched():
        return
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        return
    if dev.index is not None:
        raise ValueError(f"--device {device}: under torchrun use --device cuda; each process takes cuda:LOCAL_RANK")
    local = _env_int("LOCAL_RANK", 0)
    if local >= torch.cuda.device_count():
        raise ValueError(f"LOCAL_RANK {local} but this machine has {torch.cuda.device_count()} CUDA device(s): "
                         "start at most one process per GPU (--nproc_per_node)")


def setup(device: str = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Join the process group torchrun describes in the environment; returns whether it did.

    Does nothing (returns False) in a single process or if already set up. The backend is
    NCCL for CUDA devices (each process uses ``cuda:LOCAL_RANK``) and gloo on CPU. The
    rendezvous address comes from torchrun (``MASTER_ADDR``/``MASTER_PORT``).
    """
    global _timeout_s
    if not launched() or active():
        return False
    import torch
    import torch.distributed as dist

    if not timeout_s > 0:
        raise ValueError(f"the distributed timeout must be > 0 seconds, got {timeout_s}")
    check_rank_device(device)
    if not dist.is_available():
        raise ValueError("torch was built without torch.distributed")
    timeout = datetime.timedelta(seconds=timeout_s)
    _timeout_s = timeout_s
    _import_modules_that_bind_the_world_group()
    try:
        if torch.device(device).type == "cuda":
            gpu = torch.device("cuda", _env_int("LOCAL_RANK", 0))
            # "cuda" without an index now means this rank's GPU, so the configured device
            # string (written to config.json) stays the same on every rank.
            torch.cuda.set_device(gpu)
            dist.init_process_group("nccl", timeout=timeout, device_id=gpu)
        else:
            dist.init_process_group("gloo", timeout=timeout)
    except RuntimeError as err:  # the store or the backend could not connect all ranks in time
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        raise _collective_failed(f"joining the process group at {where}", err) from err
    return True


def _import_modules_that_bind_the_world_group() -> None:
    """Import, before the process group exists, the one torch module whose functions take
    ``group=group.WORLD`` as a default argument, so that those defaults are None.

    Imported later (torch._dynamo imports it, and torch imports torch._dynamo lazily: on
    a forward pass on the meta device, as in [`leap.engine.memory`][leap.engine.memory], or when the first
    ``torch.optim`` optimizer is built), the defaults hold the default
    process group for the life of the process: ``destroy_process_group`` then cannot
    free it, gloo's worker threads outlive [`shutdown()`][leap.util.distributed.shutdown], and a worker that releases a
    finished collective's tensors while the interpreter finalizes needs the GIL, is
    ended by Python with ``pthread_exit`` inside a ``noexcept`` destructor and aborts the
    process ("terminate called without an active exception", SIGABRT). See
    docs/distributed.md, "Why ranks used to abort at exit".
    """
    import torch.distributed.nn.functional  # noqa: F401


def shutdown() -> None:
    """Leave the process group (no-op when none is active)."""
    if active():
        import torch.distributed as dist

        dist.destroy_process_group()


# ---------------------------------------------------------------------- work split
def shard(items: Sequence[T], index: int | None = None, world: int | None = None) -> list[T]:
    """Rank ``index``'s (default: this rank's) contiguous share of ``items`` in a world of
    ``world`` ranks (default: the current one); the first ``len % world`` ranks get one more.

    Contiguous rather than strided on purpose: with two ranks, rank 0's partial sum
    (t0 + t1 + ...) plus rank 1's is the single-process left-to-right sum, bit for bit,
    because a sum of two floats does not depend on their order. Ranks beyond the number
    of items get nothing (they still take part in the reductions).
    """
    r = rank() if index is None else index
    n = world_size() if world is None else world
    if not 0 <= r < n:
        raise ValueError(f"rank {r} is not in a world of {n}")
    base, extra = divmod(len(items), n)
    start = r * base + min(r, extra)
    stop = start + base + (1 if r < extra else 0)
    return list(items[start:stop])


# ---------------------------------------------------------------------- collectives
def _comm_device() -> torch.device:
    """Where collective buffers must live: this rank's GPU for NCCL, else the CPU."""
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _collective_failed(what: str, err: Exception) -> DistributedError:
    return DistributedError(
        f"{prefix()}{what} failed: another rank stopped or did not reach it within the "
        f"{_timeout_s:g} s timeout (--dist-timeout); see the other ranks' errors ({type(err).__name__}: {err})"
    )


def all_reduce_sum(tensors: Sequence[Tensor]) -> None:
    """Sum each tensor over all ranks, in place, with ONE collective.

    The tensors are flattened into one buffer (of their widest dtype, so smaller ones
    round-trip exactly), reduced, and copied back. All must be on one device.
    """
    if not active() or not tensors:
        return
    import torch
    import torch.distributed as dist

    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    buffer = torch.cat([t.detach().reshape(-1).to(dtype) for t in tensors])
    comm = _comm_device()
    staged = buffer.to(comm)
    try:
        dist.all_reduce(staged, op=dist.ReduceOp.SUM)
    except RuntimeError as err:
        raise _collective_failed("all-reduce", err) from err
    buffer = staged.to(buffer.device)
    offset = 0
    with torch.no_grad():
        for t in tensors:
            n = t.numel()
            t.copy_(buffer[offset : offset + n].view(t.shape))
            offset += n


def barrier() -> None:
    """Wait until every rank gets here (bounded by the timeout)."""
    if not active():
        return
    import torch
    import torch.distributed as dist

    try:
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()
    except RuntimeError as err:
        raise _collective_failed("barrier", err) from err


def check_same(text: str, what: str) -> None:
    """Raise on every rank unless all ranks pass the same ``text`` (e.g. the run config).

    Guards against nodes launched with different arguments, which would otherwise
    train silently different runs that still all-reduce without complaint.
    """
    if not active():
        return
    import torch
    import torch.distributed as dist

    digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)
    mine = torch.tensor([digest], dtype=torch.int64, device=_comm_device())
    gathered = [torch.zeros_like(mine) for _ in range(world_size())]
    try:
        dist.all_gather(gathered, mine)
    except RuntimeError as err:
        raise _collective_failed(f"comparing the {what} across ranks", err) from err
    differing = [r for r, g in enumerate(gathered) if int(g) != digest]
    if differing:
        raise DistributedError(f"{prefix()}the {what} differs from that of rank(s) {differing}: "
                               "launch every node with the same arguments")


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` is ignored elsewhere).

    ``obj`` must be what `torch.load()` accepts with ``weights_only=True`` (tensors,
    numbers, strings, lists, tuples, dicts, None): it is sent as ``torch.save`` bytes and
    read back without arbitrary unpickling. Ranks need not share a file system.
    """
    if not active():
        return obj
    import torch
    import torch.distributed as dist

    comm = _comm_device()
    try:
        if is_main():
            buffer = io.BytesIO()
            torch.save(obj, buffer)
            payload = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8).to(comm)
            size = torch.tensor([payload.numel()], dtype=torch.int64, device=comm)
            dist.broadcast(size, src=0)
            dist.broadcast(payload, src=0)
            return obj
        size = torch.zeros(1, dtype=torch.int64, device=comm)
        dist.broadcast(size, src=0)
        payload = torch.empty(int(size), dtype=torch.uint8, device=comm)
        dist.broadcast(payload, src=0)
    except RuntimeError as err:
        raise _collective_failed("broadcast from rank 0", err) from err
    return torch.load(io.BytesIO(payload.cpu().numpy().tobytes()), map_location="cpu", weights_only=True)
