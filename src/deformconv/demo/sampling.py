"""Where the stacked deformable layers of a trained model sample, traced back from one output unit.

This is the construction of Figure 5 of the DCNv1 paper: an output unit of the last deformable
layer samples its input at ``kh*kw`` (learned) points; each of those points is itself a unit of
the layer below, which samples at its own learned points, and so on. Through three stacked 3x3
layers that is 9**3 = 729 points. Where a point falls between grid positions, the offsets of the
layer below are interpolated bilinearly, as the layer's own sampling would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class SamplingTree:
    """The sampling points of one output unit through the stacked deformable layers.

    Coordinates are (y, x) in the grid of the deformable layers (one step per grid cell).

    Attributes:
        unit: (y, x) of the output unit.
        points: Tensor[P, 2], the points where the lowest deformable layer reads its input
            (P = (kh*kw)**layers).
        weights: Tensor[P], product of the DCNv2 masks along each point's path (all 1 for DCNv1).
        regular: Tensor[P, 2], the same points with every offset set to 0 (a plain network).
    """

    unit: tuple[int, int]
    points: Tensor
    weights: Tensor
    regular: Tensor


@dataclass(frozen=True)
class SamplingExample:
    """A test image and the sampling points of one of its output units, ready to draw.

    Attributes:
        title: the test condition, the true and the predicted class.
        image: Tensor[H, W], the test image.
        tree: the traced sampling points (in grid coordinates).
        stride: input pixels per grid step.
    """

    title: str
    image: Tensor
    tree: SamplingTree
    stride: int


@torch.no_grad()
def layer_inputs(model: nn.Module, layers: list[nn.Module], image: Tensor) -> list[Tensor]:
    """The input of each layer in ``layers`` when ``model`` sees ``image`` (Tensor[1, C, H, W])."""
    captured: list[Tensor] = []
    hooks = [layer.register_forward_pre_hook(lambda _, args: captured.append(args[0])) for layer in layers]
    try:
        model.eval()
        model(image)
    finally:
        for hook in hooks:
            hook.remove()
    return captured


def _at(field: Tensor, points: Tensor) -> Tensor:
    """Bilinear read of ``field`` (Tensor[C, H, W]) at grid points (Tensor[P, 2], y then x) -> Tensor[P, C].

    Points outside the map read 0, like the convolution's own sampling.
    """
    height, width = field.shape[1:]
    # grid_sample wants (x, y) normalised so that -1 and 1 are the centres of the corner cells.
    scale = torch.tensor([2 / max(width - 1, 1), 2 / max(height - 1, 1)], dtype=points.dtype)
    grid = (points.flip(1) * scale - 1).view(1, 1, -1, 2)
    return F.grid_sample(field[None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0, :, 0].T


@torch.no_grad()
def trace(model: nn.Module, layers: list[nn.Module], image: Tensor, unit: tuple[int, int]) -> SamplingTree:
    """Traces the sampling points of output ``unit`` of the last of ``layers`` back to the first one's input.

    Args:
        model: the network (it is run once on ``image``).
        layers: stacked deformable layers (``offsets_and_mask`` method), input side first; each
            must have stride 1 so that all of them share one grid.
        image (Tensor[1, C, H, W]): the input of ``model``.
        unit: (y, x) of the output unit in the last layer's output.

    Returns:
        The sampling tree of ``unit``.

    Raises:
        ValueError: a layer has a stride other than 1.
    """
    for layer in layers:
        if tuple(layer.stride) != (1, 1):
            raise ValueError(f"every traced layer must have stride 1, got stride={tuple(layer.stride)}")
    inputs = layer_inputs(model, layers, image)
    points = torch.tensor([unit], dtype=torch.float32)
    regular = points.clone()
    weights = torch.ones(1)
    for layer, features in zip(reversed(layers), reversed(inputs)):
        kh, kw = layer.kernel_size
        dil_h, dil_w = layer.dilation
        pad_h, pad_w = layer.padding
        taps = torch.stack(
            torch.meshgrid(
                torch.arange(kh, dtype=torch.float32) * dil_h - pad_h,
                torch.arange(kw, dtype=torch.float32) * dil_w - pad_w,
                indexing="ij",
            ),
            dim=-1,
        ).view(-1, 2)
        offset, mask = layer.offsets_and_mask(features)
        parents = points
        # Offsets of every kernel point at every parent point: [P, K, 2] (dy, dx), offset group 0.
        shift = _at(offset[0, : 2 * kh * kw].float(), parents).view(-1, kh * kw, 2)
        points = (parents[:, None] + taps + shift).reshape(-1, 2)
        regular = (regular[:, None] + taps).reshape(-1, 2)
        if mask is None:
            weights = weights.repeat_interleave(kh * kw)
        else:
            weights = (weights[:, None] * _at(mask[0, : kh * kw].float(), parents)).reshape(-1)
    return SamplingTree(unit, points, weights, regular)


def spread(points: Tensor, weights: Tensor, unit: tuple[int, int]) -> float:
    """Root-mean-square distance of ``points`` (Tensor[P, 2]) from ``unit``, weighted by ``weights`` (Tensor[P]).

    In grid steps; the size of the region a unit effectively reads (see :func:`regular_spread`
    for a plain network's).
    """
    distance2 = ((points - torch.tensor(unit, dtype=points.dtype)) ** 2).sum(1)
    return float(((weights * distance2).sum() / weights.sum().clamp(min=1e-12)).sqrt())


def regular_spread(layers: int, stride: int) -> float:
    """:func:`spread` in pixels of the regular grid of ``layers`` stacked 3x3 stride-1 layers.

    Each layer adds -1, 0 or +1 step on each axis (variance 2/3), so the squared distance
    averages ``2 * layers * 2/3`` steps.
    """
    return math.sqrt(4 * layers / 3) * stride


def centre_unit(image: Tensor, stride: int) -> tuple[int, int]:
    """The grid cell over the centre of mass of ``image`` (Tensor[H, W]): the unit to trace.

    The grid is that of a stride-``stride`` convolution with "same" padding (``ceil(H / stride)``
    cells).
    """
    height, width = image.shape
    rows, columns = math.ceil(height / stride), math.ceil(width / stride)
    total = image.sum().clamp(min=1e-6)
    y = float((image.sum(1) * torch.arange(height)).sum() / total)
    x = float((image.sum(0) * torch.arange(width)).sum() / total)
    return (min(rows - 1, round(y / stride)), min(columns - 1, round(x / stride)))


@torch.no_grad()
def mean_spread(model: nn.Module, images: Tensor, stride: int) -> float:
    """Mean :func:`spread`, in input pixels, of the centre unit of each image (Tensor[M, 1, H, W])."""
    model = model.cpu().eval()
    layers = model.deformable_layers()
    total = 0.0
    for image in images:
        unit = centre_unit(image[0], stride)
        tree = trace(model, layers, image[None], unit)
        total += spread(tree.points, tree.weights, unit) * stride
    return total / len(images)


@torch.no_grad()
def examples(
    model: nn.Module, test_sets: dict[str, tuple[Tensor, Tensor]], stride: int, index: int = 0
) -> list[SamplingExample]:
    """One traced example per test condition: image ``index`` of each set, unit at the digit's centre.

    Args:
        model: a trained deformable network with a ``deformable_layers()`` method.
        test_sets: ``{condition: (images Tensor[M, 1, H, W], labels Tensor[M])}``.
        stride: input pixels per step of the deformable layers' grid.
        index: which image of each test set to draw.
    """
    model = model.cpu().eval()
    layers = model.deformable_layers()
    result = []
    for condition, (images, labels) in test_sets.items():
        image = images[index : index + 1]
        predicted = int(model(image).argmax(1))
        unit = centre_unit(image[0, 0], stride)
        title = f"{condition}: digit {int(labels[index])}, predicted {predicted}"
        result.append(SamplingExample(title, image[0, 0], trace(model, layers, image, unit), stride))
    return result
