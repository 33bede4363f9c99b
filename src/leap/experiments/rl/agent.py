"""The actor-critic network of appendix F.

Mnih et al. (2013)'s network (conv 16 x 8x8 stride 4, conv 32 x 4x4 stride 2, a
256-unit hidden layer, ReLUs) is the shared ``encoder``; a linear ``policy`` head and a
linear ``value`` head read its output. Leap learns the encoder's initialization only:
the heads' sizes depend on the game's action set, so they are initialized afresh for
every game (see `encoder_only()`).

MinAtar's 10x10 frames are too small for 8x8 stride-4 filters, so its encoder keeps the
shape of the network (two convolutions and a hidden layer) with 3x3 stride-1 filters and
128 hidden units, the size of MinAtar's own baseline network.
"""

from __future__ import annotations

from torch import Tensor, nn


class ActorCritic(nn.Module):
    """(B, C, H, W) float frames in [0, 1] -> (policy logits (B, A), value (B,))."""

    def __init__(self, encoder: nn.Module, features: int, num_actions: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.policy = nn.Linear(features, num_actions)
        self.value = nn.Linear(features, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.encoder(x)
        return self.policy(h), self.value(h).squeeze(-1)

    def logits(self, x: Tensor) -> Tensor:
        """The policy alone (acting needs no value)."""
        return self.policy(self.encoder(x))


def atari_encoder(in_channels: int = 3) -> tuple[nn.Module, int]:
    """Mnih et al. 2013 on 84x84 frames: 16x20x20 -> 32x9x9 -> 256 features."""
    encoder = nn.Sequential(
        nn.Conv2d(in_channels, 16, 8, stride=4), nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 9 * 9, 256), nn.ReLU(),
    )
    return encoder, 256


def minatar_encoder(in_channels: int = 10) -> tuple[nn.Module, int]:
    """The same shape scaled to 10x10 grids: 16x8x8 -> 32x6x6 -> 128 features."""
    encoder = nn.Sequential(
        nn.Conv2d(in_channels, 16, 3), nn.ReLU(),
        nn.Conv2d(16, 32, 3), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 6 * 6, 128), nn.ReLU(),
    )
    return encoder, 128


def make_agent(suite: str, in_channels: int, num_actions: int) -> ActorCritic:
    """A freshly initialized agent for ``suite`` ("atari" or "minatar"), global torch RNG."""
    if suite == "atari":
        encoder, features = atari_encoder(in_channels)
    elif suite == "minatar":
        encoder, features = minatar_encoder(in_channels)
    else:
        raise ValueError(f"suite must be 'atari' or 'minatar', got {suite!r}")
    return ActorCritic(encoder, features, num_actions)


def encoder_only(name: str, param: nn.Parameter) -> bool:
    """Parameter selector for the meta-learners: the shared encoder, not the heads."""
    return name.startswith("encoder.")
