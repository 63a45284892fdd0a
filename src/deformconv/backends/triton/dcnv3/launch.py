"""Launchers of the DCNv3 / DCNv4 Triton kernels: tensors in, tensors out, for either layout."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from deformconv.backends.triton.dcnv3.kernels import dcn_backward_kernel, dcn_forward_kernel
from deformconv.ops.dcnv3.geometry import DCNGeometry
from deformconv.ops.dcnv4.layout import PointLayout

# Output pixels per program; with BLOCK_D channels a program holds a [BLOCK_Q, BLOCK_D] tile.
TILE_ELEMENTS = 2048
MAX_BLOCK_Q = 64


def _blocks(geometry: DCNGeometry) -> dict[str, object]:
    block_d = triton.next_power_of_2(geometry.group_channels)
    block_q = max(1, min(MAX_BLOCK_Q, TILE_ELEMENTS // block_d))
    acc = tl.float64 if geometry.dtype == torch.float64 else tl.float32
    return {"D": geometry.group_channels, "P": geometry.points, "BLOCK_Q": block_q, "BLOCK_D": block_d, "ACC": acc}


def _sizes(geometry: DCNGeometry, layout: PointLayout) -> tuple:
    """The kernels' integer and float arguments after the tensors, in their order."""
    total = geometry.batch * geometry.out_size[0] * geometry.out_size[1]
    return (
        total, *geometry.out_size, *geometry.in_size, geometry.channels, *geometry.stride, *geometry.origin,
        geometry.offset_scale, *layout,
    )  # fmt: skip


def _taps(geometry: DCNGeometry, device: torch.device) -> Tensor:
    dtype = torch.float64 if geometry.dtype == torch.float64 else torch.float32
    return torch.tensor([v for tap in geometry.taps for v in tap], dtype=dtype, device=device)


def _grid(geometry: DCNGeometry, blocks: dict[str, object]) -> tuple[int, int]:
    total = geometry.batch * geometry.out_size[0] * geometry.out_size[1]
    return (triton.cdiv(total, blocks["BLOCK_Q"]), geometry.group)


def dcn_forward(input: Tensor, offset: Tensor, mask: Tensor, geometry: DCNGeometry, layout: PointLayout) -> Tensor:
    """Output Tensor[N, H_out, W_out, C]; ``offset`` and ``mask`` may be one packed tensor (DCNv4)."""
    input, offset, mask = input.contiguous(), offset.contiguous(), mask.contiguous()
    output = input.new_empty(geometry.batch, *geometry.out_size, geometry.channels)
    if output.numel() == 0:
        return output
    blocks = _blocks(geometry)
    taps = _taps(geometry, input.device)
    dcn_forward_kernel[_grid(geometry, blocks)](input, offset, mask, taps, output, *_sizes(geometry, layout), **blocks)
    return output


def dcn_backward(
    grad_output: Tensor,
    input: Tensor,
    offset: Tensor,
    mask: Tensor,
    geometry: DCNGeometry,
    layout: PointLayout,
    need_input: bool,
    need_offset_mask: bool,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """``(grad_input, grad_offset, grad_mask)``; for a packed tensor (``offset is mask``) both go to grad_offset.

    The input gradient is accumulated with atomics in float32 (float64 for float64) and cast.
    """
    packed = offset is mask
    grad_output, input = grad_output.contiguous(), input.contiguous()
    offset = offset.contiguous()
    mask = offset if packed else mask.contiguous()
    acc_dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
    grad_input = torch.zeros(input.shape, dtype=acc_dtype, device=input.device) if need_input else None
    grad_offset = torch.zeros_like(offset) if need_offset_mask else None
    grad_mask = (grad_offset if packed else torch.zeros_like(mask)) if need_offset_mask else None
    if grad_output.numel() > 0 and (need_input or need_offset_mask):
        blocks = _blocks(geometry)
        unused = input.new_empty(0)
        dcn_backward_kernel[_grid(geometry, blocks)](
            grad_output, input, offset, mask, _taps(geometry, input.device),
            unused if grad_input is None else grad_input,
            unused if grad_offset is None else grad_offset,
            unused if grad_mask is None else grad_mask,
            *_sizes(geometry, layout), **blocks, NEED_INPUT=need_input, NEED_OFFSET_MASK=need_offset_mask,
        )  # fmt: skip
    if grad_input is not None:
        grad_input = grad_input.to(input.dtype)
    return grad_input, grad_offset, None if packed else grad_mask
