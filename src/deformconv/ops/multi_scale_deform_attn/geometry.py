"""The one description of a multi-scale deformable attention call's sizes.

Validation (:mod:`.checks`) builds it, the op passes it to the kernel of every backend, and the
benchmark reads its sizes from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from deformconv.ops.deform_conv2d.geometry import accumulation_dtype

# Bilinear interpolation reads four neighbours per sample point.
CORNERS = 4


@dataclass(frozen=True)
class AttnGeometry:
    """Sizes of one ``multi_scale_deform_attn`` call.

    Attributes:
        batch: N.
        num_value: S, the flattened length of every level together (sum of ``H_l*W_l``).
        heads: M.
        channels: D, the channels of one head.
        queries: Lq.
        levels: L.
        points: P, sample points per query, head and level.
        level_shapes: ``((H_0, W_0), ...)``, one pair per level (empty while tracing: the sizes
            are data of ``spatial_shapes``).
        level_starts: where each level starts in the flattened value (empty while tracing).
        dtype: dtype of ``value``, ``sampling_locations`` and ``attention_weights``.
        batch_chunk: images processed at once by kernels that gather into a buffer.
        query_chunk: queries of one image processed at once by those kernels.
    """

    batch: int
    num_value: int
    heads: int
    channels: int
    queries: int
    levels: int
    points: int
    dtype: torch.dtype
    level_shapes: tuple[tuple[int, int], ...] = ()
    level_starts: tuple[int, ...] = ()
    batch_chunk: int = 1
    query_chunk: int = 1

    @property
    def accumulation_dtype(self) -> torch.dtype:
        return accumulation_dtype(self.dtype)

    @property
    def embed_dims(self) -> int:
        """M*D, the channels of the output."""
        return self.heads * self.channels

    @property
    def gathered_elements_per_query(self) -> int:
        """Elements that gathering every corner of one query's points on one level takes."""
        return self.heads * self.points * CORNERS * self.channels

    def with_levels(self, shapes: tuple[tuple[int, int], ...], starts: tuple[int, ...]) -> AttnGeometry:
        return dataclasses.replace(self, level_shapes=shapes, level_starts=starts)

    def with_chunks(self, batch_chunk: int, query_chunk: int) -> AttnGeometry:
        return dataclasses.replace(self, batch_chunk=batch_chunk, query_chunk=query_chunk)
