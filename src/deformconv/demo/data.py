"""The demo's data: scikit-learn's 8x8 digits placed on a larger canvas at varied geometry.

Each digit is drawn on a ``canvas x canvas`` image at a random size, rotation and position, so
that what changes between images is mostly geometry, the thing deformable convolution is meant
to absorb. The source digits are split once into a training pool and a test pool (a digit image
is never seen in training and in testing), and every test condition draws its geometry from its
own range, so a model trained on one range can be tested inside and outside it.

Everything is generated with explicit ``torch.Generator`` seeds: the same seed gives the same
images on every machine, and nothing is downloaded (``load_digits`` ships with scikit-learn).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# Source digits kept out of training; the split is fixed so every seed is tested on the same images.
TEST_FRACTION = 0.3
SPLIT_SEED = 0
# Test images are drawn with a fixed seed too: differences between seeds come from training alone.
TEST_SEED = 1234


@dataclass(frozen=True)
class Geometry:
    """A range of placements of a digit on the canvas.

    Attributes:
        size: (min, max) side of the digit's square, in canvas pixels (drawn uniformly).
        angle: (min, max) absolute rotation in degrees; the sign is drawn at random.
    """

    size: tuple[float, float]
    angle: tuple[float, float]

    def describe(self) -> str:
        return f"size {self.size[0]:g}-{self.size[1]:g} px, rotation {self.angle[0]:g}-{self.angle[1]:g} deg"


@dataclass(frozen=True)
class Digits:
    """Source digits.

    Attributes:
        images: Tensor[N, 1, 8, 8] in [0, 1].
        labels: Tensor[N] (int64) in 0..9.
    """

    images: Tensor
    labels: Tensor


def load_source_digits() -> tuple[Digits, Digits]:
    """scikit-learn's 1797 digits, split into a training pool and a held-out test pool."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_test = int(len(labels) * TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    return Digits(images[train], labels[train]), Digits(images[test], labels[test])


def render(digits: Tensor, geometry: Geometry, canvas: int, generator: torch.Generator) -> Tensor:
    """Draws each digit once on a blank canvas at a random placement within ``geometry``.

    Args:
        digits (Tensor[N, 1, 8, 8]): source digits in [0, 1].
        geometry: the range of sizes and rotations.
        canvas: side of the output images in pixels.
        generator: the source of randomness (so the result is reproducible).

    Returns:
        Tensor[N, 1, canvas, canvas] in [0, 1].
    """
    n = digits.shape[0]
    size = _uniform(n, *geometry.size, generator)
    angle = torch.deg2rad(_uniform(n, *geometry.angle, generator))
    angle = angle * (torch.randint(0, 2, (n,), generator=generator) * 2 - 1)
    # Keep the whole rotated square on the canvas: its half extent is size/2 * (|cos| + |sin|).
    half_extent = size / 2 * (angle.cos().abs() + angle.sin().abs())
    room = (canvas / 2 - half_extent).clamp(min=0)
    centre = (torch.rand(n, 2, generator=generator) * 2 - 1) * room[:, None]

    # grid_sample maps output (canvas) coordinates to input (digit) coordinates, both in
    # [-1, 1]: the inverse of "scale by size/canvas, rotate, then shift to centre".
    cos, sin = angle.cos(), angle.sin()
    shrink = canvas / size
    shift = centre / (canvas / 2)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * shrink, sin * shrink
    theta[:, 1, 0], theta[:, 1, 1] = -sin * shrink, cos * shrink
    theta[:, :, 2] = -(theta[:, :, :2] @ shift[:, :, None]).squeeze(2)
    # Upsampling the 8x8 source first keeps large renderings smooth rather than blocky.
    smooth = F.interpolate(digits, scale_factor=4, mode="bilinear", align_corners=False)
    grid = F.affine_grid(theta, [n, 1, canvas, canvas], align_corners=False)
    return F.grid_sample(smooth, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def make_test_sets(
    pool: Digits, conditions: dict[str, Geometry], canvas: int, copies: int
) -> dict[str, tuple[Tensor, Tensor]]:
    """One fixed test set per condition: every pool digit drawn ``copies`` times.

    Returns:
        ``{condition: (images Tensor[M, 1, canvas, canvas], labels Tensor[M])}`` with
        ``M = copies * len(pool.labels)``; the same for every training seed.
    """
    sets = {}
    for index, (name, geometry) in enumerate(conditions.items()):
        generator = torch.Generator().manual_seed(TEST_SEED + index)
        digits = pool.images.repeat(copies, 1, 1, 1)
        sets[name] = (render(digits, geometry, canvas, generator), pool.labels.repeat(copies))
    return sets


def training_epoch(pool: Digits, geometry: Geometry, canvas: int, seed: int, epoch: int) -> tuple[Tensor, Tensor]:
    """A fresh rendering of the training pool for one epoch, in a shuffled order.

    Returns:
        (images Tensor[N, 1, canvas, canvas], labels Tensor[N]), deterministic in
        ``(seed, epoch)``.
    """
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(pool.labels), generator=generator)
    images = render(pool.images[order], geometry, canvas, generator)
    return images, pool.labels[order]
