"""The convolutional stack both baselines share with the Omniglot/Multi-CV encoder."""

from __future__ import annotations

from torch import nn


def conv_stack(
    in_channels: int, image_size: int, filters: int, layers: int
) -> tuple[nn.ModuleList, nn.ModuleList, int]:
    """``layers`` x [conv 3x3 (padding 1), batch norm with batch statistics]; each layer
    is followed by a 2x2 max-pool in the models' forward passes.

    Returns the convolutions, the norms and the flattened feature size after the last
    pool (``filters * (image_size // 2**layers)**2``).
    """
    convs, norms = nn.ModuleList(), nn.ModuleList()
    channels, size = in_channels, image_size
    for _ in range(layers):
        convs.append(nn.Conv2d(channels, filters, 3, padding=1))
        norms.append(nn.BatchNorm2d(filters, track_running_stats=False))
        channels, size = filters, size // 2
    return convs, norms, filters * size * size
