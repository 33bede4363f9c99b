"""Models of the paper's experiments. Every model names its task-specific output layer
``head`` so that multi-headed finetuning and encoder-only meta-learning can find it."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from leap.util.seeding import derive_seed


class MLP(nn.Module):
    """Two hidden ReLU layers and a linear head: (B, in_dim) -> (B, num_classes)."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 64) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))

    def stacked_forward(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """T copies of the network at once, each with its own parameters: ``params[name]``
        is (T, *shape of parameter ``name``), x (T, B, in_dim) -> logits (T, B, num_classes).

        The same function as ``vmap(functional_call(self, ...))`` (tested), written with
        batched matrix products: on a network this small, vmap's and functional_call's
        per-call overheads cost more than the arithmetic (docs/benchmarks.md). The
        batched engine uses it when present ([`leap.engine.batched.BatchedEngine`][leap.engine.batched.BatchedEngine]).
        """
        h = x
        for name, layer in self.encoder.named_children():
            if isinstance(layer, nn.Linear):
                h = stacked_linear(h, params[f"encoder.{name}.weight"], params[f"encoder.{name}.bias"])
            else:  # elementwise (ReLU): any shape
                h = layer(h)
        return stacked_linear(h, params["head.weight"], params["head.bias"])


def stacked_linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """T linear layers at once: x (T, B, in), weight (T, out, in), bias (T, out) -> (T, B, out)."""
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


class ConvNet(nn.Module):
    """The Omniglot/Multi-CV encoder (appendix D): 4 x [conv 3x3, 64 filters, padding 1,
    max-pool 2, batch-norm, ReLU] then a linear head.

    (B, C, 28, 28) -> 64 x 1 x 1 features; (B, C, 32, 32) -> 64 x 2 x 2.

    ``running_stats``: batch norm keeps running statistics (momentum 0.1) and, in eval
    mode, classifies with them, as the authors' code does; a test image's prediction then
    does not depend on the other test images (non-transductive). Without it the model
    has no buffers and batch norm always uses the statistics of the batch at hand.
    ``bn_weight_init``: ``"uniform"`` draws batch-norm scales from U(0, 1), the PyTorch
    0.4 default the paper ran with; ``"ones"`` is today's default.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 20, image_size: int = 28, filters: int = 64,
                 running_stats: bool = False, bn_weight_init: str = "ones") -> None:
        super().__init__()
        if bn_weight_init not in ("ones", "uniform"):
            raise ValueError(f"bn_weight_init must be 'ones' or 'uniform', got {bn_weight_init!r}")
        layers: list[nn.Module] = []
        channels = in_channels
        size = image_size
        for _ in range(4):
            conv = nn.Conv2d(channels, filters, 3, padding=1)
            norm = nn.BatchNorm2d(filters, track_running_stats=running_stats)
            if bn_weight_init == "uniform":
                nn.init.uniform_(norm.weight)
            layers += [conv, nn.MaxPool2d(2), norm, nn.ReLU()]
            channels = filters
            size //= 2
        self.encoder = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(filters * size * size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))


def reset_running_stats(model: nn.Module) -> None:
    """Batch norm's running statistics back to their initial values (mean 0, variance 1),
    so that a task's evaluation uses statistics of that task's training alone."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            module.reset_running_stats()


def reset_head(model: nn.Module, *seed_parts: object) -> None:
    """Re-initialize ``model.head`` with its default init, seeded by ``seed_parts``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(*seed_parts))
        model.head.reset_parameters()


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position t attends to positions 0..t:
    (B, T, width) -> (B, T, width). Written out (not ``F.scaled_dot_product_attention``),
    so that MAML can differentiate through it twice on a CPU."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, h: Tensor) -> Tensor:
        b, t, w = h.shape
        q, k, v = self.qkv(h).view(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, T, d)
        scores = q @ k.transpose(-1, -2) / math.sqrt(w // self.heads)
        future = torch.ones(t, t, dtype=torch.bool, device=h.device).triu(1)
        attention = scores.masked_fill(future, float("-inf")).softmax(-1)
        return self.out((attention @ v).transpose(1, 2).reshape(b, t, w))


class TransformerBlock(nn.Module):
    """Pre-norm block: h + attention(norm(h)), then h + MLP(norm(h)) with a 4x GELU MLP."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = CausalSelfAttention(width, heads)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, h: Tensor) -> Tensor:
        h = h + self.attention(self.norm1(h))
        return h + self.mlp(self.norm2(h))


class CharEncoder(nn.Module):
    """Bytes to features: (B, T) int64 -> (B, T, width); token and learned position
    embeddings, ``layers`` `TransformerBlock` s, a final layer norm."""

    def __init__(self, vocab: int, width: int, layers: int, heads: int, context: int) -> None:
        super().__init__()
        self.context = context
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Embedding(context, width)
        self.blocks = nn.Sequential(*(TransformerBlock(width, heads) for _ in range(layers)))
        self.norm = nn.LayerNorm(width)

    def forward(self, x: Tensor) -> Tensor:
        t = x.shape[1]
        if t > self.context:
            raise ValueError(f"sequence of {t} tokens is longer than the context of {self.context}")
        h = self.tokens(x) + self.positions(torch.arange(t, device=x.device))
        return self.norm(self.blocks(h))


class CharTransformer(nn.Module):
    """A decoder-only transformer over bytes (issue 32's long training processes):
    `CharEncoder` then the ``head`` that predicts the next byte.

    (B, T) int64 in [0, vocab), T <= context -> logits (B, T, vocab): position t predicts
    the byte at t + 1 from bytes 0..t. No dropout: a task's training is deterministic.
    """

    batchable = False  # the batched engine trains classifiers of one label per input

    def __init__(self, vocab: int = 256, width: int = 128, layers: int = 2, heads: int = 4,
                 context: int = 128) -> None:
        super().__init__()
        self.encoder = CharEncoder(vocab, width, layers, heads, context)
        self.head = nn.Linear(width, vocab)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))
