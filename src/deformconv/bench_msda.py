"""``deformconv bench --op msda``: multi-scale deformable attention against its grid_sample formulation.

Times the forward and the forward+backward of :func:`deformconv.multi_scale_deform_attn` on every
backend that runs on the device, side by side in one process with :func:`grid_sample_attention`
(the pure-PyTorch formulation of Deformable DETR's and mmcv's CPU path, one ``F.grid_sample`` per
level), on the shapes of a Deformable DETR encoder layer (every pixel of the four levels is a
query) and decoder layer (300 queries), and reports the peak extra memory of one forward+backward.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def grid_sample_attention(
    value: Tensor, spatial_shapes: list[tuple[int, int]], sampling_locations: Tensor, attention_weights: Tensor
) -> Tensor:
    """Multi-scale deformable attention written with one ``F.grid_sample`` per level.

    Args:
        value (Tensor[N, S, M, D]), sampling_locations (Tensor[N, Lq, M, L, P, 2]),
        attention_weights (Tensor[N, Lq, M, L, P]): as in :func:`deformconv.multi_scale_deform_attn`.
        spatial_shapes: ``[(H_0, W_0), ...]``.

    Returns:
        Tensor[N, Lq, M*D].
    """
    batch, _, heads, channels = value.shape
    queries, points = sampling_locations.shape[1], sampling_locations.shape[4]
    output = value.new_zeros(batch * heads, channels, queries)
    start = 0
    for level, (height, width) in enumerate(spatial_shapes):
        # [N, H*W, M, D] -> [N*M, D, H, W]
        image = (
            value[:, start : start + height * width].permute(0, 2, 3, 1).reshape(batch * heads, channels, height, width)
        )
        start += height * width
        # [N, Lq, M, P, 2] -> [N*M, Lq, P, 2] in grid_sample's [-1, 1]
        grid = 2 * sampling_locations[:, :, :, level].transpose(1, 2).flatten(0, 1) - 1
        sampled = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        weights = attention_weights[:, :, :, level].transpose(1, 2).reshape(batch * heads, 1, queries, points)
        output = output + (sampled * weights).sum(-1)
    return output.view(batch, heads * channels, queries).transpose(1, 2)
