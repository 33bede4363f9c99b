"""Appendix B: how good is the identity approximation J_i(θ0) ≈ I (Figure 5)?

Leap's meta-gradient (eq. 8) replaces the Jacobian J_i(θ0) = ∂θ_i/∂θ0 of a task's i-th
iterate with respect to the initialization by the identity. With plain SGD on fixed
minibatch losses f_j, θ_{j+1} = θ_j - α ∇f_j(θ_j), so (appendix B)

    J_{j+1}(θ0) = (I - α H_j) J_j(θ0),    J_0 = I,    H_j = ∇²f_j(θ_j),

and the relative precision of the approximation after i steps is

    ρ_i = ||I - J_i(θ0)||_1 / ||J_i(θ0)||_1      (Schatten 1-norm: the nuclear norm).

What is measured. Like the paper, the block of J_i for the first layer: B_i = ∂θ_i[L] /
∂θ0[L] with L the parameters of the network's first layer (for the Omniglot ConvNet the
first convolution's weight and bias, 64·1·3·3 + 64 = 640 numbers). Every parameter of the
network is trained in the inner loop, so B_i is the diagonal block of the full Jacobian;
it is also the Jacobian of the map θ0[L] -> θ_i[L] with the rest of θ0 held fixed (the two
are the same partial derivatives).

How. Forward mode: the n_L columns of J_i that belong to L are pushed through the SGD
recursion above, one Hessian-vector product per column and step, computed exactly as
``torch.func.jvp`` of ``torch.func.grad`` of the functional model (forward-over-reverse)
and vmapped over chunks of columns to bound memory. One pass gives B_i for every i ≤ K.
We carry the deviation D_i = J_i[:, L] - E (E embeds the identity), never J_i itself, so
I - B_i is read off without cancellation (in float32, 1 + 1e-6 keeps one digit of 1e-6).
Cost: K·n_L Hessian-vector products; memory: n_L × (number of parameters) numbers for D.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap

from leap.models import ConvNet
from leap.tasks.base import Task
from leap.util.checks import positive_ints
from leap.util.devices import check_device
from leap.util.errors import CorruptFileError, UsageError
from leap.util.files import atomic_write_json
from leap.util.seeding import derive_seed, derived_generator

Batch = tuple[Tensor, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]

HELP = "appendix B: precision of Leap's identity approximation of the Jacobian (Figure 5)"


# ---------------------------------------------------------------------- linear algebra
def schatten1(matrix: Tensor) -> Tensor:
    """Schatten 1-norm (nuclear norm: the sum of singular values) of ``matrix`` (n, m),
    computed in float64. Returns a 0-dim float64 tensor."""
    return torch.linalg.matrix_norm(matrix.double(), ord="nuc")


def relative_precision(deviation: Tensor) -> float:
    """ρ = ||I - J||_1 / ||J||_1 (appendix B) from the deviation D = J - I, (n, n).

    Taking D rather than J keeps the small differences exact: ||I - J||_1 = ||D||_1.
    """
    if deviation.ndim != 2 or deviation.shape[0] != deviation.shape[1]:
        raise ValueError(f"deviation must be a square matrix, got shape {tuple(deviation.shape)}")
    d = deviation.double()
    jac = d + torch.eye(len(d), dtype=d.dtype, device=d.device)
    return float(schatten1(d) / schatten1(jac))


# ---------------------------------------------------------------------- the Jacobian
def first_layer(model: nn.Module) -> list[str]:
    """Names of the parameters of the first module (in registration order) that owns any:
    for :class:`~leap.models.ConvNet`, ``["encoder.0.weight", "encoder.0.bias"]``."""
    for module_name, module in model.named_modules():
        own = [name for name, _ in module.named_parameters(recurse=False)]
        if own:
            prefix = f"{module_name}." if module_name else ""
            return [prefix + name for name in own]
    raise ValueError("model has no parameters")


def _check_block(params: dict[str, Tensor], block: Sequence[str]) -> list[str]:
    block = list(block)
    unknown = [n for n in block if n not in params]
    if unknown or not block:
        raise ValueError(f"block must name parameters of the model; unknown {unknown}, have {sorted(params)}")
    return block


def sgd_step(model: nn.Module, params: dict[str, Tensor], batch: Batch, lr: float,
             loss_fn: LossFn = F.cross_entropy) -> dict[str, Tensor]:
    """One SGD step θ - α ∇f(θ) (eq. 1 with S = I) on ``batch``, written functionally."""
    x, y = batch
    grads = grad(lambda p: loss_fn(functional_call(model, p, (x,)), y))(params)
    return {n: p - lr * grads[n] for n, p in params.items()}


def block_map(model: nn.Module, params: dict[str, Tensor], batches: Sequence[Batch], lr: float,
              block: Sequence[str], loss_fn: LossFn = F.cross_entropy) -> Callable[[Tensor], Tensor]:
    """The map θ0[L] -> θ_K[L] (both flattened to (n_L,)): K SGD steps on ``batches``
    with the other parameters of θ0 fixed at ``params``. Differentiable; this is what
    :func:`sgd_block_jacobians` differentiates, exposed as a reference for checks."""
    block = _check_block(params, block)
    shapes = [params[n].shape for n in block]
    sizes = [math.prod(s) for s in shapes]

    def run(flat: Tensor) -> Tensor:
        theta = dict(params)
        for name, piece, shape in zip(block, flat.split(sizes), shapes, strict=True):
            theta[name] = piece.reshape(shape)
        for batch in batches:
            theta = sgd_step(model, theta, batch, lr, loss_fn)
        return torch.cat([theta[n].reshape(-1) for n in block])

    return run


def sgd_block_jacobians(
    model: nn.Module,
    params: dict[str, Tensor],
    batches: Sequence[Batch],
    lr: float,
    block: Sequence[str],
    chunk: int = 32,
    loss_fn: LossFn = F.cross_entropy,
    on_step: Callable[[int, Tensor], None] | None = None,
) -> list[Tensor]:
    """Exact deviations D_i = B_i - I of the first-layer block of J_i(θ0), i = 1..K.

    Args:
        model: the network (its module structure and buffers; parameters come from ``params``).
            Its train/eval mode is used as is (the ConvNet's batch norm uses batch statistics).
        params: θ0, every parameter of the model by name; all of them are trained.
        batches: the K fixed minibatches (x (B, ...), y (B,)) of steps 0..K-1.
        lr: the SGD learning rate α.
        block: names of the parameters forming L (see :func:`first_layer`).
        chunk: columns pushed through one vmapped Hessian-vector product (memory bound).
        on_step: called with (i, D_i) as soon as step i is done (progress, early output).

    Returns K tensors (n_L, n_L), entry [r, c] = ∂θ_i[L]_r / ∂θ0[L]_c - δ_rc.
    """
    block = _check_block(params, block)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    theta = {n: p.detach() for n, p in params.items()}
    ref = theta[block[0]]
    sizes = [theta[n].numel() for n in block]
    n_block = sum(sizes)
    starts = dict(zip(block, [sum(sizes[:k]) for k in range(len(block))], strict=True))
    eye = torch.eye(n_block, dtype=ref.dtype, device=ref.device)
    # dev[n][c] is the deviation of column c (input direction c of L) in parameter n: the
    # tangent that carries direction c is E[:, c] + dev[:, c].
    dev = {n: torch.zeros(n_block, *p.shape, dtype=p.dtype, device=p.device) for n, p in theta.items()}
    out = []
    for step, (x, y) in enumerate(batches, start=1):
        def loss(p: dict[str, Tensor], x: Tensor = x, y: Tensor = y) -> Tensor:
            return loss_fn(functional_call(model, p, (x,)), y)

        grad_fn = grad(loss)
        point = theta

        def hvp(tangent: dict[str, Tensor], point: dict[str, Tensor] = point,
                grad_fn: Callable = grad_fn) -> dict[str, Tensor]:
            return jvp(grad_fn, (point,), (tangent,))[1]

        batched_hvp = vmap(hvp)
        for a in range(0, n_block, chunk):
            b = min(a + chunk, n_block)
            tangent = {n: d[a:b] for n, d in dev.items()}
            for n in block:
                s = starts[n]
                e_part = eye[a:b, s : s + theta[n].numel()].reshape(b - a, *theta[n].shape)
                tangent[n] = tangent[n] + e_part
            h = batched_hvp(tangent)  # H_j (E + D_j) for these columns
            for n, d in dev.items():
                d[a:b].sub_(h[n], alpha=lr)  # D_{j+1} = D_j - α H_j (E + D_j)
        grads = grad_fn(theta)
        theta = {n: p - lr * grads[n] for n, p in theta.items()}  # θ_{j+1} = θ_j - α ∇f_j(θ_j)
        # Rows = outputs (θ_i[L]), columns = inputs (θ0[L]).
        deviation = torch.cat([dev[n].reshape(n_block, -1) for n in block], dim=1).T.clone()
        out.append(deviation)
        if on_step is not None:
            on_step(step, deviation)
    return out


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


@dataclass
class JacobianProtocol:
    """What a study measures; two studies with equal protocols give the same numbers."""

    data: str = "omniglot"  # "omniglot" or "synthetic"
    steps: int = 20
    every: int = 5
    lrs: list[float] = field(default_factory=lambda: [0.01, 0.1, 0.5])
    tasks: int = 5
    split: str = "train"
    batch: int = 20
    seed: int = 0
    filters: int = 64

    def validate(self) -> None:
        positive_ints(self, ("steps", "every", "tasks", "batch", "filters"))
        if not self.lrs or any(not (lr >= 0 and math.isfinite(lr)) for lr in self.lrs):
            raise ValueError(f"lrs must be finite and >= 0, got {self.lrs}")
        if self.data not in ("omniglot", "synthetic"):
            raise ValueError(f"data must be 'omniglot' or 'synthetic', got {self.data!r}")

    def identity(self) -> dict[str, Any]:
        """The fields that fix each (task, lr) measurement; ``tasks``, ``lrs`` and
        ``every`` only choose which measurements a study holds and reports, so a study
        can be extended (or cut) without redoing what it measured."""
        values = asdict(self)
        for key in ("tasks", "lrs", "every"):
            values.pop(key)
        return values

    def reported_steps(self) -> list[int]:
        """Step 1 and every ``every``-th step up to ``steps`` (the table's columns)."""
        return sorted({1, *range(self.every, self.steps + 1, self.every)})


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


class ProtocolMismatch(ValueError):
    """The output directory holds a study with another protocol."""


def load_runs(out: Path, protocol: JacobianProtocol) -> list[dict[str, Any]]:
    """The (task, lr) results already in ``out``/jacobian.json (none if absent) that this
    protocol asks for; raises :class:`ProtocolMismatch` if they were measured under
    another protocol (see :meth:`JacobianProtocol.identity`)."""
    path = Path(out) / "jacobian.json"
    if not path.exists():
        return []
    try:
        previous = json.loads(path.read_text())
    except ValueError as err:
        raise ProtocolMismatch(f"{path} is not readable JSON ({err})") from err
    try:
        same = JacobianProtocol(**previous["protocol"]).identity() == protocol.identity()
    except (KeyError, TypeError):
        same = False
    if not same:
        raise ProtocolMismatch(f"{path} holds a study with another protocol")
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


# ---------------------------------------------------------------------- report
def write_jacobian_report(out: Path) -> list[Path]:
    """jacobian.md (ρ at the reported steps, mean ± std over tasks) and jacobian.png
    (Figure 5: ρ against the step, log scale, one line per learning rate) from
    ``out``/jacobian.json. Returns the paths written."""
    result = json.loads((Path(out) / "jacobian.json").read_text())
    protocol = JacobianProtocol(**result["protocol"])
    steps = protocol.reported_steps()
    data_note = ("Omniglot" if protocol.data == "omniglot"
                 else "SYNTHETIC random pixels and labels (not Omniglot; a smoke test)")
    model_note = "" if protocol.filters == 64 else f" (reduced model: {protocol.filters} filters, not the paper's 64)"
    lines = [
        "# Appendix B: relative precision of the identity approximation of J_i(θ0)",
        "",
        f"ρ_i = ||I - J_i||_1 / ||J_i||_1 (nuclear norms) on the first-layer block "
        f"({', '.join(result['block']['parameters'])}: {result['block']['size']} parameters), after i SGD "
        f"steps from a random initialization of the ConvNet{model_note}. Data: {data_note}, split "
        f"'{protocol.split}', batch {protocol.batch}, seed {protocol.seed}. Mean ± std over tasks.",
        "",
        "| learning rate | tasks | " + " | ".join(f"step {s}" for s in steps) + " |",
        "|---|---|" + "---|" * len(steps),
    ]
    for lr in protocol.lrs:
        s = result["summary"].get(repr(lr))
        if s is None:
            continue
        cells = [f"{s['mean'][i - 1]:.2e} ± {s['std'][i - 1]:.1e}" for i in steps]
        lines.append(f"| {lr} | {s['tasks']} | " + " | ".join(cells) + " |")
    seconds = sum(r["seconds"] for r in result["runs"])
    env = result["environment"]
    lines += ["", f"Compute: {seconds:.0f} s over {len(result['runs'])} (task, lr) pairs on {env['device']} "
              f"({env['threads']} threads, torch {env['torch']}).", ""]
    md = Path(out) / "jacobian.md"
    md.write_text("\n".join(lines))
    return [md, plot_jacobian(result, Path(out) / "jacobian.png")]


def plot_jacobian(result: dict[str, Any], path: Path) -> Path:
    """Figure 5: mean ρ over tasks against the step (log scale), min-max band over tasks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocol = JacobianProtocol(**result["protocol"])
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    marks = protocol.reported_steps()
    for lr in protocol.lrs:
        s = result["summary"].get(repr(lr))
        if s is None:
            continue
        x = list(range(1, len(s["mean"]) + 1))
        # ρ is exactly 0 at lr 0: nothing to draw on a log axis.
        if max(s["max"]) <= 0:
            continue
        line, = ax.plot(x, s["mean"], label=f"lr {lr} ({s['tasks']} tasks)")
        ax.fill_between(x, s["min"], s["max"], color=line.get_color(), alpha=0.2, linewidth=0)
        ax.plot(marks, [s["mean"][i - 1] for i in marks], "o", color=line.get_color())
    ax.set_yscale("log")
    ax.set_xticks(marks)
    ax.set_xlabel("step i")
    ax.set_ylabel("ρ = ||I - J_i||₁ / ||J_i||₁")
    title = "Relative precision of J ≈ I, first layer"
    if protocol.filters != 64:
        title += f" ({protocol.filters}-filter ConvNet)"
    if protocol.data != "omniglot":
        title += " [SYNTHETIC DATA]"
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------- command line
def _lrs(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err


def add_options(p: argparse.ArgumentParser) -> None:
    """Options of ``leap jacobian``."""
    p.add_argument("--out", required=True, help="output directory (jacobian.json, jacobian.md, jacobian.png)")
    p.add_argument("--data-dir", help="Omniglot directory (default: $LEAP_OMNIGLOT_DIR)")
    p.add_argument("--synthetic", action="store_true",
                   help="random pixels and labels instead of Omniglot (smoke tests; labelled as such)")
    p.add_argument("--steps", type=int, default=20, help="SGD steps K")
    p.add_argument("--every", type=int, default=5, help="report ρ at step 1 and every M steps")
    p.add_argument("--lrs", type=_lrs, default=[0.01, 0.1, 0.5], help="comma-separated learning rates")
    p.add_argument("--tasks", type=int, default=5, help="tasks (first N alphabets of --split)")
    p.add_argument("--split", default="train", choices=["train", "val", "test"])
    p.add_argument("--batch", type=int, default=20, help="minibatch size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--filters", type=int, default=64, help="ConvNet filters (64 is the paper's model)")
    p.add_argument("--chunk", type=int, default=32, help="Jacobian columns per vmapped product (memory)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--overwrite", action="store_true", help="discard a study with another protocol in --out")


def cmd_jacobian(args: argparse.Namespace) -> int:
    from leap.tasks import make_benchmark

    protocol = JacobianProtocol(
        data="synthetic" if args.synthetic else "omniglot", steps=args.steps, every=args.every, lrs=args.lrs,
        tasks=args.tasks, split=args.split, batch=args.batch, seed=args.seed, filters=args.filters,
    )
    try:
        protocol.validate()
    except ValueError as err:
        raise UsageError(str(err)) from err
    if args.chunk < 1:
        raise UsageError(f"--chunk must be >= 1, got {args.chunk}")
    if args.synthetic and args.data_dir:
        raise UsageError("--synthetic and --data-dir exclude each other")
    check_device(args.device)
    out = Path(args.out)
    if args.overwrite and (out / "jacobian.json").exists():
        (out / "jacobian.json").unlink()
    try:
        load_runs(out, protocol)
    except ProtocolMismatch as err:
        raise UsageError(f"{err}; use --overwrite to replace it") from err
    if args.synthetic:
        benchmark: Any = SyntheticImages()
    else:
        try:
            # The study's figures (docs/analysis.md) were measured on the smooth pipeline's images.
            benchmark = make_benchmark("omniglot", data_dir=args.data_dir, device="cpu", pipeline="smooth")
        except (FileNotFoundError, CorruptFileError, ValueError) as err:
            raise UsageError(str(err)) from err
    if protocol.tasks > benchmark.num_sources(protocol.split):
        raise UsageError(f"--tasks {protocol.tasks}: split {protocol.split!r} has "
                         f"{benchmark.num_sources(protocol.split)} tasks")
    result = run_study(benchmark, protocol, out, args.device, args.chunk,
                       log=lambda msg: print(f"leap: {msg}", file=sys.stderr))
    print((out / "jacobian.md").read_text(), end="")
    print(f"wrote {out / 'jacobian.json'}, {out / 'jacobian.md'} and {out / 'jacobian.png'} "
          f"({sum(r['seconds'] for r in result['runs']):.0f} s of compute)")
    return 0
