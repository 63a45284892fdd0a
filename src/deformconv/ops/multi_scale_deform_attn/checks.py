"""Argument validation for ``multi_scale_deform_attn``.

Every check runs in Python before any kernel sees the data, so a bad argument raises a clear
error (naming the argument, what was expected and what was given) instead of crashing a kernel
or reading out of bounds. :func:`check_args` reads shapes, dtypes and devices only, so the fake
kernel runs it while ``torch.compile`` traces; :func:`check_levels` reads the level sizes held in
``spatial_shapes`` and ``level_start_index`` and runs before every real kernel.
"""

from __future__ import annotations

import torch
from torch import Tensor

from deformconv.ops.multi_scale_deform_attn.geometry import AttnGeometry
from deformconv.ops.validation import FLOAT_DTYPES, check_tensor, require

# The layout of each tensor argument, as error messages name it.
ARG_LAYOUTS = {
    "value": "[N, S, M, D]",
    "spatial_shapes": "[L, 2]",
    "level_start_index": "[L]",
    "sampling_locations": "[N, Lq, M, L, P, 2]",
    "attention_weights": "[N, Lq, M, L, P]",
}


def check_args(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> AttnGeometry:
    """Validates shapes, dtypes and devices, and returns the geometry they imply (without level sizes).

    Raises:
        TypeError: an argument has the wrong type or dtype.
        ValueError: shapes are inconsistent.
        RuntimeError: tensors live on different devices.
    """
    tensors = (value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    for (name, layout), tensor, ndim in zip(ARG_LAYOUTS.items(), tensors, (4, 2, 1, 6, 5)):
        check_tensor(tensor, name, ndim, layout)

    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"value must be float64, float32, float16 or bfloat16, got {value.dtype}")
    for name, tensor in (("sampling_locations", sampling_locations), ("attention_weights", attention_weights)):
        if tensor.dtype != value.dtype:
            raise TypeError(f"{name} must have the dtype of value ({value.dtype}), got {tensor.dtype}")
    for name, tensor in (("spatial_shapes", spatial_shapes), ("level_start_index", level_start_index)):
        if tensor.dtype != torch.int64:
            raise TypeError(f"{name} must be int64, got {tensor.dtype}")
    named = [
        ("spatial_shapes", spatial_shapes),
        ("level_start_index", level_start_index),
        ("sampling_locations", sampling_locations),
        ("attention_weights", attention_weights),
    ]
    for name, tensor in named:
        if tensor.device != value.device:
            raise RuntimeError(f"{name} must be on the device of value ({value.device}), got {tensor.device}")

    batch, num_value, heads, channels = value.shape
    levels = spatial_shapes.shape[0]
    require(
        heads >= 1 and channels >= 1,
        ValueError,
        f"value must have at least one head and one channel (shape [N, S, M, D]), got {list(value.shape)}",
    )
    require(
        levels >= 1 and spatial_shapes.shape[1] == 2,
        ValueError,
        f"spatial_shapes must have shape [L, 2] with L >= 1, got {list(spatial_shapes.shape)}",
    )
    require(
        level_start_index.shape[0] == levels,
        ValueError,
        f"level_start_index must have shape [L] = [{levels}], got {list(level_start_index.shape)}",
    )
    queries, points = sampling_locations.shape[1], sampling_locations.shape[4]
    require(
        points >= 1,
        ValueError,
        f"sampling_locations must have P >= 1 points, got shape {list(sampling_locations.shape)}",
    )
    expected = (batch, queries, heads, levels, points, 2)
    require(
        tuple(sampling_locations.shape) == expected,
        ValueError,
        f"sampling_locations must have shape [N, Lq, M, L, P, 2] = {list(expected)}, "
        f"got {list(sampling_locations.shape)}",
    )
    require(
        tuple(attention_weights.shape) == expected[:5],
        ValueError,
        f"attention_weights must have shape [N, Lq, M, L, P] = {list(expected[:5])}, "
        f"got {list(attention_weights.shape)}",
    )
    return AttnGeometry(
        batch=batch,
        num_value=num_value,
        heads=heads,
        channels=channels,
        queries=queries,
        levels=levels,
        points=points,
        dtype=value.dtype,
    )


def check_levels(spatial_shapes: Tensor, level_start_index: Tensor, geometry: AttnGeometry) -> AttnGeometry:
    """Checks the level sizes (data of the two index tensors) and adds them to ``geometry``.

    Raises:
        ValueError: a level is empty, the levels do not cover ``value``'s S exactly, or a start
            index disagrees with the sizes of the levels before it.
    """
    shapes = tuple((int(h), int(w)) for h, w in spatial_shapes.tolist())
    starts = tuple(int(s) for s in level_start_index.tolist())
    if any(h < 1 or w < 1 for h, w in shapes):
        raise ValueError(f"spatial_shapes must hold (H, W) pairs >= 1, got {[list(s) for s in shapes]}")
    total = sum(h * w for h, w in shapes)
    if total != geometry.num_value:
        raise ValueError(
            f"spatial_shapes must cover value's S = {geometry.num_value} (sum of H*W), "
            f"got levels {[list(s) for s in shapes]} with sum {total}"
        )
    expected = [0]
    for h, w in shapes[:-1]:
        expected.append(expected[-1] + h * w)
    if list(starts) != expected:
        raise ValueError(
            f"level_start_index must be {expected} for spatial_shapes {[list(s) for s in shapes]}, got {list(starts)}"
        )
    return geometry.with_levels(shapes, starts)
