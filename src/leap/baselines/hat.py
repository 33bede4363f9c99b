"""HAT, Hard Attention to the Task (Serra et al., ICML 2018), non-sequential.

The network is the Multi-CV convolutional encoder (4 x [conv 3x3, max-pool, batch-norm,
ReLU]) with one linear head per task. Every task t owns a learned embedding e_t^l per
layer l (one entry per unit, i.e. per output channel); its attention mask is

    a_t^l = sigmoid(s * e_t^l)                            (F,) per layer, F = filters

and layer l's output (after the ReLU) is multiplied unit-wise by a_t^l. With s large
the mask is (almost) binary: a hard choice of the units task t uses.

Training task t (Serra et al., section 2):

- **Annealed sigmoid.** Within an epoch of B batches, batch b (0-based) uses
  s = 1/s_max + (s_max - 1/s_max) b / (B - 1) (`annealed_scale()`); evaluation
  uses s = s_max.
- **Protecting other tasks.** a_<t^l is the unit-wise maximum of the masks (at s_max)
  of the other tasks already trained. The gradient of a weight from unit j of layer
  l-1 to unit i of layer l is multiplied by 1 - min(a_<t^l[i], a_<t^{l-1}[j]) (the
  image is the input of layer 0, so only a_<t^0[i] counts there); unit-wise
  parameters (bias, batch-norm scale and shift) by 1 - a_<t^l[i]. Weights that other
  tasks rely on do not move.
- **Embedding gradient compensation.** The embedding's gradient is multiplied by
  s_max (cosh(s e) + 1) / (s (cosh(e) + 1)) (cosh argument clamped to +-50), so that it
  does not vanish while s is annealed; after each step the embedding is clamped to
  [-6, 6] (the sigmoid saturates there at s_max anyway).
- **Attention regularizer.** c * sum_l sum_i a_t^l[i] (1 - a_<t^l[i]) /
  sum_l sum_i (1 - a_<t^l[i]) is added to the loss: it keeps units that other tasks
  have not claimed free for later tasks.

Non-sequential use (Leap appendix E): tasks may be revisited in any order. Revisiting
task t, "the other tasks" are all trained tasks but t itself, so t may change the
weights only it uses, and its own embedding keeps learning. Hyperparameters default to
Serra et al.'s: s_max = 400, c = 0.75.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leap.baselines.layers import conv_stack

S_MAX = 400.0
REG_STRENGTH = 0.75  # Serra et al.'s c
COSH_CLAMP = 50.0
EMBEDDING_CLAMP = 6.0


def annealed_scale(batch: int, num_batches: int, s_max: float = S_MAX) -> float:
    """s for batch ``batch`` (0-based) of ``num_batches``: linear from 1/s_max to s_max."""
    if num_batches <= 1:
        return s_max
    frac = min(max(batch, 0), num_batches - 1) / (num_batches - 1)
    return 1.0 / s_max + (s_max - 1.0 / s_max) * frac


class HATNet(nn.Module):
    """The Multi-CV encoder with per-task hard-attention masks and per-task heads.

    Tasks are added with `add_task()` (an embedding of shape (layers, filters),
    drawn from N(0, 1) as ``nn.Embedding`` does, and a fresh head). ``forward(x, task, s)``
    maps (B, C, H, W) to (B, num_classes of ``task``).
    """

    def __init__(self, in_channels: int = 3, image_size: int = 32, filters: int = 64, layers: int = 4,
                 s_max: float = S_MAX, reg_strength: float = REG_STRENGTH) -> None:
        super().__init__()
        if s_max <= 1:
            raise ValueError(f"s_max must be > 1, got {s_max}")
        self.s_max = s_max
        self.reg_strength = reg_strength
        self.filters = filters
        self.convs, self.norms, self.feature_dim = conv_stack(in_channels, image_size, filters, layers)
        self.embeddings = nn.ParameterList()
        self.heads = nn.ModuleList()
        # trained[t]: task t has been trained at least once, so its mask protects units.
        self.register_buffer("trained", torch.zeros(0, dtype=torch.bool))

    @property
    def num_tasks(self) -> int:
        return len(self.heads)

    def add_task(self, num_classes: int) -> int:
        """Add a task (embedding and head, on the network's device); returns its index."""
        device = self.convs[0].weight.device
        self.embeddings.append(nn.Parameter(torch.randn(len(self.convs), self.filters, device=device)))
        self.heads.append(nn.Linear(self.feature_dim, num_classes).to(device))
        self.trained = torch.cat([self.trained, torch.zeros(1, dtype=torch.bool, device=self.trained.device)])
        return self.num_tasks - 1

    def masks(self, task: int, s: float) -> Tensor:
        """Task ``task``'s attention, sigmoid(s e): (layers, filters) in (0, 1)."""
        return torch.sigmoid(s * self.embeddings[task])

    @torch.no_grad()
    def other_masks(self, task: int) -> Tensor:
        """a_<t: unit-wise max of the s_max masks of every trained task except ``task``
        (layers, filters); zeros when there is none."""
        others = [k for k in range(self.num_tasks) if k != task and bool(self.trained[k])]
        if not others:
            return torch.zeros_like(self.embeddings[task])
        return torch.stack([self.masks(k, self.s_max) for k in others]).amax(0)

    def forward(self, x: Tensor, task: int, s: float | None = None) -> Tensor:
        mask = self.masks(task, self.s_max if s is None else s)
        h = x
        for layer, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = F.relu(norm(F.max_pool2d(conv(h), 2)))
            h = h * mask[layer].view(1, -1, 1, 1)  # gate units after the activation
        return self.heads[task](h.flatten(1))

    def regularizer(self, task: int, s: float) -> Tensor:
        """c * (units task t claims that others left free) / (units others left free)."""
        free = 1.0 - self.other_masks(task)
        used = (self.masks(task, s) * free).sum()
        return self.reg_strength * used / free.sum().clamp_min(1e-8)

    def parameters_for(self, task: int) -> list[nn.Parameter]:
        """What training ``task`` optimizes: the shared layers, its embedding and its head."""
        return [*self.convs.parameters(), *self.norms.parameters(), self.embeddings[task],
                *self.heads[task].parameters()]

    @torch.no_grad()
    def condition_gradients(self, task: int, s: float) -> None:
        """After ``backward``, before the optimizer step: protect the other tasks' units
        and compensate the embedding's gradient for the annealed s."""
        prev = self.other_masks(task)
        for layer, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            post = prev[layer]
            if layer == 0:
                weight_use = post.view(-1, 1, 1, 1)
            else:
                weight_use = torch.minimum(post.view(-1, 1, 1, 1), prev[layer - 1].view(1, -1, 1, 1))
            _scale_grad(conv.weight, 1.0 - weight_use)
            for p in (conv.bias, norm.weight, norm.bias):
                _scale_grad(p, 1.0 - post)
        emb = self.embeddings[task]
        if emb.grad is not None:
            num = torch.cosh((s * emb).clamp(-COSH_CLAMP, COSH_CLAMP)) + 1
            den = torch.cosh(emb) + 1
            emb.grad.mul_(self.s_max / s * num / den)

    @torch.no_grad()
    def after_step(self, task: int) -> None:
        """After the optimizer step: clamp the embedding (the mask saturates beyond)."""
        self.embeddings[task].clamp_(-EMBEDDING_CLAMP, EMBEDDING_CLAMP)

    def mark_trained(self, task: int) -> None:
        self.trained[task] = True


def _scale_grad(p: Tensor | None, factor: Tensor) -> None:
    if p is not None and p.grad is not None:
        p.grad.mul_(factor)


__all__ = ["HATNet", "annealed_scale"]
