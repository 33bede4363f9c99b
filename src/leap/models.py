"""Models of the paper's experiments. Every model names its task-specific output layer
``head`` so that multi-headed finetuning and encoder-only meta-learning can find it."""

from __future__ import annotations

from torch import Tensor, nn


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


class ConvNet(nn.Module):
    """The Omniglot/Multi-CV encoder (appendix D): 4 x [conv 3x3, 64 filters, padding 1,
    max-pool 2, batch-norm, ReLU] then a linear head.

    (B, C, 28, 28) -> 64 x 1 x 1 features; (B, C, 32, 32) -> 64 x 2 x 2. Batch norm uses
    batch statistics in training and evaluation alike (``track_running_stats=False``),
    so the model has no buffers and a task's evaluation does not depend on running
    averages carried over from training.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 20, image_size: int = 28, filters: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        size = image_size
        for _ in range(4):
            layers += [
                nn.Conv2d(channels, filters, 3, padding=1),
                nn.MaxPool2d(2),
                nn.BatchNorm2d(filters, track_running_stats=False),
                nn.ReLU(),
            ]
            channels = filters
            size //= 2
        self.encoder = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(filters * size * size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))
