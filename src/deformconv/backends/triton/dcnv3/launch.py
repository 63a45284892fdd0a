"""Launchers of the DCNv3 / DCNv4 Triton kernels: tensors in, tensors out, for either layout.

Tiles and launch options are in :mod:`.configs`; both kernels launch on a 1-d grid through
:func:`deformconv.backends.triton.runtime.launch`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from deformconv.backends.triton.dcnv3.configs import Config, config
from deformconv.backends.triton.dcnv3.kernels import dcn_backward_kernel, dcn_forward_kernel
from deformconv.backends.triton.deform_conv2d.launch import on_device
from deformconv.backends.triton.runtime import capability, check_pixels, launch
from deformconv.ops.dcnv3.geometry import DCNGeometry
from deformconv.ops.dcnv4.layout import PointLayout


def _options(geometry: DCNGeometry, cfg: Config) -> dict[str, object]:
    acc = tl.float64 if geometry.dtype == torch.float64 else tl.float32
    return {"D": geometry.group_channels, "P": geometry.points, "ACC": acc, **cfg.options()}


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


def _programs(geometry: DCNGeometry, cfg: Config) -> int:
    total = geometry.batch * geometry.out_size[0] * geometry.out_size[1]
    check_pixels("N * H_out * W_out", total)
    return triton.cdiv(total, cfg.block_q) * geometry.group


def dcn_forward(input: Tensor, offset: Tensor, mask: Tensor, geometry: DCNGeometry, layout: PointLayout) -> Tensor:
    """Output Tensor[N, H_out, W_out, C]; ``offset`` and ``mask`` may be one packed tensor (DCNv4)."""
    input, offset, mask = input.contiguous(), offset.contiguous(), mask.contiguous()
    output = input.new_empty(geometry.batch, *geometry.out_size, geometry.channels)
    if output.numel() == 0:
        return output
    cfg = config("forward", geometry.group_channels, geometry.dtype, capability(input.device))
    args = (input, offset, mask, _taps(geometry, input.device), output, *_sizes(geometry, layout))
    with on_device(input.device):
        launch(dcn_forward_kernel, _programs(geometry, cfg), args, _options(geometry, cfg), "pixel tiles * groups")
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
        cfg = config("backward", geometry.group_channels, geometry.dtype, capability(input.device))
        unused = input.new_empty(0)
        args = (
            grad_output, input, offset, mask, _taps(geometry, input.device),
            unused if grad_input is None else grad_input,
            unused if grad_offset is None else grad_offset,
            unused if grad_mask is None else grad_mask,
            *_sizes(geometry, layout),
        )  # fmt: skip
        options = dict(_options(geometry, cfg), NEED_INPUT=need_input, NEED_OFFSET_MASK=need_offset_mask)
        with on_device(input.device):
            launch(dcn_backward_kernel, _programs(geometry, cfg), args, options, "pixel tiles * groups")
    if grad_input is not None:
        grad_input = grad_input.to(input.dtype)
    return grad_input, grad_offset, None if packed else grad_mask
