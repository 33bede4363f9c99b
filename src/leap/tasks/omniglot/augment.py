"""Appendix D's augmentation: a random affine map per image, split into its draw and its application."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from leap.tasks.omniglot.constants import MAX_TRANSLATION, ROTATION_DEGREES, SCALE_RANGE


# ---------------------------------------------------------------------- augmentation
@dataclass(frozen=True)
class AffineParams:
    """Per-image parameters of the augmentation's affine map (the forward map, from the
    original image to the augmented one, about the image centre).

    ``angle`` (B,) degrees, positive turns clockwise as displayed (rows grow downwards);
    ``translate`` (B, 2) as fractions of (width, height), positive moves content
    right/down; ``scale`` (B,) magnification.
    """

    angle: Tensor
    translate: Tensor
    scale: Tensor

    def to(self, device: torch.device | str) -> AffineParams:
        return AffineParams(self.angle.to(device), self.translate.to(device), self.scale.to(device))


def sample_affine_params(n: int, generator: torch.Generator, device: torch.device | str | None = None) -> AffineParams:
    """Draw ``n`` maps from appendix D's ranges: rotation in [0, 360), translation in
    [-0.2, 0.2) per axis, scale in [0.8, 1.2). Randomness comes from ``generator`` only
    (drawn on its device), results are moved to ``device`` (default: the generator's)."""
    params = affine_params_from_uniforms(draw_affine_uniforms(n, generator))
    return params.to(device) if device is not None else params


def draw_affine_uniforms(n: int, generator: torch.Generator) -> Tensor:
    """The randomness of ``n`` maps: (n, 4) uniforms in [0, 1) from ``generator``, on its
    device (kept apart so that the batched engine draws exactly what
    [`sample_affine_params()`][leap.tasks.omniglot.augment.sample_affine_params] draws, then converts all tasks'
    draws at once)."""
    return torch.rand(n, 4, generator=generator, device=generator.device)


def affine_params_from_uniforms(u: Tensor) -> AffineParams:
    """Appendix D's maps from (n, 4) uniforms in [0, 1): columns give the angle, the two
    translations and the scale. Elementwise, so it runs on any device and batch size."""
    # remainder: float32 rounding of u * 360 could give exactly 360 for u just below 1.
    angle = (u[:, 0] * ROTATION_DEGREES).remainder(ROTATION_DEGREES)
    translate = (u[:, 1:3] * 2 - 1) * MAX_TRANSLATION
    low, high = SCALE_RANGE
    scale = low + (high - low) * u[:, 3]
    return AffineParams(angle, translate, scale)


def affine_theta(params: AffineParams, height: int, width: int) -> Tensor:
    """The (B, 2, 3) matrices for `torch.nn.functional.affine_grid()` that realize
    ``params``. affine_grid maps *output* coordinates to *input* coordinates in
    normalized [-1, 1] units, so this is the inverse of the forward map; rotation is
    done in pixel units so that it stays a rotation on non-square images."""
    rad = torch.deg2rad(params.angle.float())
    cos, sin = torch.cos(rad), torch.sin(rad)
    inv_s = 1.0 / params.scale.float()
    # Inverse linear part in pixel units: (1/s) R(-angle).
    a11, a12 = cos * inv_s, sin * inv_s
    a21, a22 = -sin * inv_s, cos * inv_s
    # Conjugate by D = diag(W/2, H/2) to work in normalized units: D^-1 A D.
    ratio = width / height
    theta = torch.empty(len(rad), 2, 3, device=rad.device)
    theta[:, 0, 0] = a11
    theta[:, 0, 1] = a12 / ratio
    theta[:, 1, 0] = a21 * ratio
    theta[:, 1, 1] = a22
    # A shift of t (fraction of the size) is 2t in normalized units; input = A(out - 2t).
    t = params.translate.float() * 2
    theta[:, :, 2] = -(theta[:, :, :2] @ t.unsqueeze(-1)).squeeze(-1)
    return theta


def apply_affine(x: Tensor, params: AffineParams, mode: str = "bilinear") -> Tensor:
    """Warp each image of ``x`` (B, C, H, W) float by its map in ``params``, sampling
    with ``mode`` (``"bilinear"`` or ``"nearest"``); pixels that come from outside the
    image are 0. Returns (B, C, H, W), same dtype."""
    b, c, h, w = x.shape
    theta = affine_theta(params.to(x.device), h, w).to(x.dtype)
    grid = F.affine_grid(theta, [b, c, h, w], align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


@dataclass(frozen=True)
class RandomAffine:
    """Appendix D's augmentation as a ``Task.augment``: an independent random affine map
    per image of ``x`` (B, C, H, W) float, batched on ``x``'s device, sampled with
    ``mode``. ``aug(x, generator)`` returns (B, C, H, W)."""

    mode: str = "bilinear"

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if len(x) == 0:
            return x
        return apply_affine(x, sample_affine_params(len(x), generator, x.device), self.mode)

    # A tasks.base.SplitAugment: the batched engine draws every step's maps first.
    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        return draw_affine_uniforms(n, generator)

    def apply(self, x: Tensor, randomness: Tensor) -> Tensor:
        return apply_affine(x, affine_params_from_uniforms(randomness), self.mode)


#: The smooth pipeline's augmentation (bilinear); the released one samples nearest.
random_affine = RandomAffine("bilinear")
AUGMENTATION = {"released": RandomAffine("nearest"), "smooth": random_affine}
