"""The Jacobian of SGD steps with respect to a block of θ0, and its distance to the identity (appendix B)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap

from leap.experiments.analysis.jacobian.protocol import HELP  # noqa: F401  (declared without torch, read here too)

Batch = tuple[Tensor, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]


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
    for [`ConvNet`][leap.models.ConvNet], ``["encoder.0.weight", "encoder.0.bias"]``."""
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
    `sgd_block_jacobians()` differentiates, exposed as a reference for checks."""
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


def _tangents(dev: dict[str, Tensor], eye: Tensor, starts: dict[str, int], theta: dict[str, Tensor],
              block: Sequence[str], a: int, b: int) -> dict[str, Tensor]:
    """Columns a..b-1 of E + D_j as parameter-shaped tangents (E: the block's identity)."""
    tangent = {n: d[a:b] for n, d in dev.items()}
    for n in block:
        s = starts[n]
        tangent[n] = tangent[n] + eye[a:b, s : s + theta[n].numel()].reshape(b - a, *theta[n].shape)
    return tangent


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

    (About 60 lines on purpose: the SGD step and the recurrence of D read top to bottom.)

    Args:
        model: the network (its module structure and buffers; parameters come from ``params``).
            Its train/eval mode is used as is (the ConvNet's batch norm uses batch statistics).
        params: θ0, every parameter of the model by name; all of them are trained.
        batches: the K fixed minibatches (x (B, ...), y (B,)) of steps 0..K-1.
        lr: the SGD learning rate α.
        block: names of the parameters forming L (see `first_layer()`).
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
            h = batched_hvp(_tangents(dev, eye, starts, theta, block, a, b))  # H_j (E + D_j) for these columns
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
