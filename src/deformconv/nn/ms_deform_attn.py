"""Multi-scale deformable attention layer (Deformable DETR), a drop-in for mmcv's.

:class:`MultiScaleDeformableAttention` has the constructor, initialisation, ``forward`` and
state-dict keys of ``mmcv.ops.MultiScaleDeformableAttention``; its parameters are also those of
Deformable DETR's ``MSDeformAttn`` (``sampling_offsets``, ``attention_weights``, ``value_proj``,
``output_proj``), so checkpoints of either load with ``load_state_dict``.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn

from deformconv.nn.deform_conv import positive_int
from deformconv.ops import multi_scale_deform_attn


def level_start_index_of(spatial_shapes: Tensor) -> Tensor:
    """``[0, H_0*W_0, H_0*W_0 + H_1*W_1, ...]`` for ``spatial_shapes`` (Tensor[L, 2])."""
    areas = spatial_shapes[:, 0] * spatial_shapes[:, 1]
    return torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])


def sampling_locations_of(reference_points: Tensor, offsets: Tensor, spatial_shapes: Tensor) -> Tensor:
    """Sample locations from reference points (or boxes) and predicted offsets.

    Args:
        reference_points (Tensor[N, Lq, L, 2] or Tensor[N, Lq, L, 4]): ``(x, y)`` in ``[0, 1]``,
            or boxes ``(cx, cy, w, h)``.
        offsets (Tensor[N, Lq, M, L, P, 2]): in pixels of each level for points; for boxes in
            units of ``P`` times half the box size (a point ``p`` steps ``offset / P * size / 2``).
        spatial_shapes (Tensor[L, 2]): ``(H_l, W_l)``.

    Returns:
        Tensor[N, Lq, M, L, P, 2].

    Raises:
        ValueError: the last dimension of ``reference_points`` is neither 2 nor 4.
    """
    corner = reference_points[:, :, None, :, None, :2]
    if reference_points.shape[-1] == 2:
        # Offsets are in pixels of each level: divide by (W, H).
        normalizer = torch.stack([spatial_shapes[:, 1], spatial_shapes[:, 0]], -1)
        return corner + offsets / normalizer[None, None, None, :, None, :]
    if reference_points.shape[-1] == 4:
        points = offsets.shape[4]
        return corner + offsets / points * reference_points[:, :, None, :, None, 2:] * 0.5
    raise ValueError(f"reference_points must end in 2 (points) or 4 (boxes), got shape {list(reference_points.shape)}")


class MultiScaleDeformableAttention(nn.Module):
    r"""Multi-scale deformable attention of `Deformable DETR <https://arxiv.org/abs/2010.04159>`_.

    Same constructor, initialisation, ``forward`` and state-dict keys as
    ``mmcv.ops.MultiScaleDeformableAttention``. Each query predicts, from ``query + query_pos``,
    ``P`` sampling offsets per head and level (``sampling_offsets``) and their attention
    weights (``attention_weights``, a softmax over the ``L*P`` points of a head); the values
    (``value_proj`` of ``value``) are read there by :func:`deformconv.multi_scale_deform_attn`,
    projected by ``output_proj``, passed through dropout and added to ``identity``.

    Args:
        embed_dims (int): channels of query and value (C). Default: 256.
        num_heads (int): attention heads (M); must divide ``embed_dims``. Default: 8.
        num_levels (int): feature levels (L). Default: 4.
        num_points (int): sample points per head and level (P). Default: 4.
        im2col_step (int): kept for mmcv configs; the memory of the op is bounded by
            :func:`deformconv.im2col_budget` instead. Default: 64.
        dropout (float): dropout on the output before the residual. Default: 0.1.
        batch_first (bool): tensors are ``[N, L, C]`` if True, ``[L, N, C]`` otherwise.
            Default: False.
        norm_cfg (dict, optional): kept for mmcv configs (mmcv does not use it either).
        init_cfg (dict, optional): kept for mmcv configs; initialisation is :meth:`init_weights`.
        value_proj_ratio (float): ``value_proj`` has ``int(embed_dims * value_proj_ratio)``
            outputs. Default: 1.0.

    Example:
        >>> layer = MultiScaleDeformableAttention(embed_dims=64, num_heads=4, num_levels=2, batch_first=True)
        >>> shapes = torch.tensor([[8, 8], [4, 4]])
        >>> value = torch.randn(2, 80, 64)
        >>> query = torch.randn(2, 10, 64)
        >>> reference = torch.rand(2, 10, 2, 2)
        >>> layer(query, value=value, reference_points=reference, spatial_shapes=shapes).shape
        torch.Size([2, 10, 64])
    """

    def __init__(
        self,
        embed_dims: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 4,
        im2col_step: int = 64,
        dropout: float = 0.1,
        batch_first: bool = False,
        norm_cfg: dict | None = None,
        init_cfg: dict | None = None,
        value_proj_ratio: float = 1.0,
    ) -> None:
        super().__init__()
        for name, number in (("embed_dims", embed_dims), ("num_heads", num_heads)):
            positive_int(number, name)
        for name, number in (("num_levels", num_levels), ("num_points", num_points)):
            positive_int(number, name)
        if embed_dims % num_heads != 0:
            raise ValueError(f"embed_dims must be divisible by num_heads, got {embed_dims} and {num_heads}")
        head_dims = embed_dims // num_heads
        if head_dims & (head_dims - 1) != 0:
            warnings.warn(
                f"embed_dims / num_heads = {head_dims} is not a power of 2, which the GPU kernels of other "
                "libraries handle slowly; deformconv's kernels accept it",
                stacklevel=2,
            )
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.im2col_step = im2col_step
        self.batch_first = batch_first
        self.norm_cfg = norm_cfg
        self.init_cfg = init_cfg
        self.dropout = nn.Dropout(dropout)
        points = num_heads * num_levels * num_points
        self.sampling_offsets = nn.Linear(embed_dims, points * 2)
        self.attention_weights = nn.Linear(embed_dims, points)
        value_dims = int(embed_dims * value_proj_ratio)
        self.value_proj = nn.Linear(embed_dims, value_dims)
        self.output_proj = nn.Linear(value_dims, embed_dims)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """mmcv's (and Deformable DETR's) initialisation.

        Head ``m`` starts looking in direction ``2*pi*m/M``: its offsets are that unit direction
        scaled so its largest coordinate is 1, times ``p + 1`` for point ``p``, on every level
        (the bias of ``sampling_offsets``; its weight is 0). Attention weights start at 0
        (uniform after the softmax); ``value_proj`` and ``output_proj`` are Xavier-uniform with
        zero bias.
        """
        nn.init.zeros_(self.sampling_offsets.weight)
        device = self.sampling_offsets.weight.device
        angles = torch.arange(self.num_heads, dtype=torch.float32, device=device) * (2.0 * math.pi / self.num_heads)
        directions = torch.stack([angles.cos(), angles.sin()], -1)
        directions = directions / directions.abs().max(-1, keepdim=True).values
        steps = torch.arange(1, self.num_points + 1, dtype=torch.float32, device=device)
        grid = directions[:, None, None, :] * steps[None, None, :, None]
        grid = grid.expand(self.num_heads, self.num_levels, self.num_points, 2)
        self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for projection in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(projection.weight)
            nn.init.zeros_(projection.bias)

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        identity: Tensor | None = None,
        query_pos: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        reference_points: Tensor | None = None,
        spatial_shapes: Tensor | None = None,
        level_start_index: Tensor | None = None,
        **kwargs: object,
    ) -> Tensor:
        """Attends from ``query`` to the multi-scale ``value``.

        Args:
            query (Tensor[Lq, N, C], or [N, Lq, C] if batch_first): the queries.
            key: unused (the keys are the sample points), as in mmcv.
            value (Tensor[S, N, C], or [N, S, C] if batch_first): the flattened levels;
                ``query`` if None (self-attention over the feature maps, as in the encoder).
            identity (Tensor like query): added to the output; ``query`` if None.
            query_pos (Tensor like query): added to ``query`` before the offsets and weights
                are predicted (not to ``identity``).
            key_padding_mask (Tensor[N, S], bool): True where ``value`` is padding; those
                values read as 0.
            reference_points (Tensor[N, Lq, L, 2] or [N, Lq, L, 4]): points ``(x, y)`` in
                ``[0, 1]``, or boxes ``(cx, cy, w, h)``.
            spatial_shapes (Tensor[L, 2], int64): ``(H_l, W_l)`` of each level.
            level_start_index (Tensor[L], int64): computed from ``spatial_shapes`` if None.
            **kwargs: ignored, as in mmcv (transformer layers pass extra arguments).

        Returns:
            Tensor like ``query``.

        Raises:
            ValueError: ``reference_points`` or ``spatial_shapes`` is missing, or
                ``reference_points`` ends in neither 2 nor 4.
        """
        if reference_points is None or spatial_shapes is None:
            raise ValueError("reference_points and spatial_shapes are required")
        if value is None:
            value = query
        if identity is None:
            identity = query
        if query_pos is not None:
            query = query + query_pos
        if not self.batch_first:
            query = query.transpose(0, 1)
            value = value.transpose(0, 1)
        if level_start_index is None:
            level_start_index = level_start_index_of(spatial_shapes)
        batch, queries, _ = query.shape
        num_value = value.shape[1]

        value = self.value_proj(value)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(batch, num_value, self.num_heads, -1)
        per_head = (batch, queries, self.num_heads, self.num_levels, self.num_points)
        offsets = self.sampling_offsets(query).view(*per_head, 2)
        weights = self.attention_weights(query).view(batch, queries, self.num_heads, -1).softmax(-1).view(per_head)
        locations = sampling_locations_of(reference_points, offsets, spatial_shapes)
        output = self.output_proj(multi_scale_deform_attn(value, spatial_shapes, level_start_index, locations, weights))
        if not self.batch_first:
            output = output.transpose(0, 1)
        return self.dropout(output) + identity

    def extra_repr(self) -> str:
        return (
            f"embed_dims={self.embed_dims}, num_heads={self.num_heads}, num_levels={self.num_levels}, "
            f"num_points={self.num_points}, batch_first={self.batch_first}"
        )
