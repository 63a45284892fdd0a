"""Launch-side behaviour of the Triton kernels: TF32 settings, 64-bit indices, grid limits, layouts.

Runs in Triton's CPU interpreter without a GPU (see :mod:`triton_support`).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import deformconv
from cases import Case
from deformconv.backends.triton import runtime
from triton_support import (
    DEVICE,
    as_float64,
    assert_matches,
    backward,
    backward_args,
    check_backward,
    check_forward,
    forward,
    forward_args,
    launch,
    reference,
    tensors,
    triton_backend,
)


@pytest.fixture
def restore_fp32_precision():
    """Puts PyTorch's float32 precision settings back after a test changes them."""
    matmul = torch.backends.cuda.matmul
    saved = torch.backends.fp32_precision, matmul.fp32_precision
    yield
    torch.backends.fp32_precision, matmul.fp32_precision = saved


def test_float32_is_exact_ieee_by_default():
    assert launch.precision(torch.float32).dot_precision == "ieee"
    assert not launch.tf32_enabled()


@pytest.mark.parametrize("where", ["matmul", "global"])
def test_tf32_through_the_new_api_is_honoured_and_does_not_crash(where, restore_fp32_precision):
    if where == "matmul":
        torch.backends.cuda.matmul.fp32_precision = "tf32"
    else:
        torch.backends.fp32_precision = "tf32"
    assert launch.precision(torch.float32).dot_precision == "tf32"
    assert launch.precision(torch.float16).dot_precision == "ieee"  # only float32 products change
    # The public op, forward and backward, on float32 (the interpreter multiplies exactly).
    case = Case(batch=1, in_channels=16, out_channels=16, size=(3, 4))
    t = tensors(case, torch.float32)
    leaves = {k: v.clone().requires_grad_(True) for k, v in t.items() if k != "grad_output"}
    with triton_backend():
        out = deformconv.deform_conv2d(**leaves, **case.params())
        grad_input, grad_weight = torch.autograd.grad(out, [leaves["input"], leaves["weight"]], t["grad_output"])
    assert_matches(out.detach(), reference.deform_conv2d_forward(*as_float64(forward_args(case, t))), out.dtype, "out")
    want = reference.deform_conv2d_backward(*as_float64(backward_args(case, t)))
    assert_matches(grad_input, want.input, torch.float32, "grad_input")
    assert_matches(grad_weight, want.weight, torch.float32, "grad_weight")


def test_tf32_back_to_ieee_through_the_new_api(restore_fp32_precision):
    torch.backends.fp32_precision = "tf32"
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    assert launch.precision(torch.float32).dot_precision == "ieee"


@pytest.mark.parametrize("allowed", [True, False])
def test_tf32_through_the_legacy_flag_on_older_pytorch(allowed, monkeypatch):
    # A PyTorch before 2.9 has only ``allow_tf32``.
    monkeypatch.setattr(torch.backends.cuda, "matmul", SimpleNamespace(allow_tf32=allowed))
    assert launch.tf32_enabled() is allowed
    assert launch.precision(torch.float32).dot_precision == ("tf32" if allowed else "ieee")


def huge_strided(like: torch.Tensor, dim: int, stride: int) -> torch.Tensor:
    """A copy of ``like`` whose stride along ``dim`` is ``stride`` elements (contiguous otherwise).

    The storage spans ``stride * size(dim)`` elements, more than 2^31, but only the elements of
    the view are ever written: the operating system maps the pages that are touched, so a few
    pages of real memory back gigabytes of address space.
    """
    strides = list(like.contiguous().stride())
    strides[dim] = stride
    span = sum((size - 1) * s for size, s in zip(like.shape, strides)) + 1
    storage = torch.empty(span, dtype=like.dtype, device=like.device)
    view = storage.as_strided(like.shape, strides)
    view.copy_(like)
    return view


# Channel strides that put the last channels more than 2^31 elements past the first: every
# element offset of offsets, mask and grad_output must be computed in 64 bits.
HUGE = 2**31 // 8 + 64


@pytest.mark.skipif(DEVICE != "cpu", reason="address space trick for the CPU interpreter")
def test_channel_offsets_past_2_to_the_31_elements():
    case = Case(batch=1, in_channels=16, out_channels=16, size=(3, 4), kernel=(3, 3), padding=(1, 1))
    dtype = torch.float16
    t = tensors(case, dtype)
    strided = dict(t)
    strided["offset"] = huge_strided(t["offset"], 1, HUGE)  # 18 channels: channel 17 at 2.4e9
    strided["mask"] = huge_strided(t["mask"], 1, 2 * HUGE)  # 9 channels: channel 8 at 4.3e9
    strided["grad_output"] = huge_strided(t["grad_output"], 1, HUGE)  # 16 channels
    for name in ("offset", "mask", "grad_output"):
        assert strided[name].stride(1) * (strided[name].shape[1] - 1) > 2**31
    check_forward(case, dtype, strided)
    check_backward(case, dtype, strided)


@pytest.mark.skipif(DEVICE != "cpu", reason="address space trick for the CPU interpreter")
def test_row_offsets_past_2_to_the_31_elements():
    case = Case(batch=2, in_channels=2, out_channels=2, size=(3, 4))
    dtype = torch.float16
    t = tensors(case, dtype)
    strided = dict(t)
    # Row 2 of each image more than 2^31 elements after row 0.
    strided["offset"] = huge_strided(t["offset"], 2, 2**30 + 8)
    strided["grad_output"] = huge_strided(t["grad_output"], 2, 2**30 + 8)
    check_forward(case, dtype, strided)
    check_backward(case, dtype, strided)


@pytest.mark.skipif(DEVICE != "cpu", reason="address space trick for the CPU interpreter")
def test_channels_last_input_with_a_huge_batch_stride_is_read_in_place():
    case = Case(batch=2, in_channels=4, out_channels=4, size=(3, 4))
    t = tensors(case, torch.float16)
    nhwc = t["input"].permute(0, 2, 3, 1)  # N, H, W, C
    view = huge_strided(nhwc, 0, 2**31 + 16).permute(0, 3, 1, 2)
    assert view.stride(1) == 1 and view.stride(0) > 2**31
    assert launch.channels_last(view) is view
    check_forward(case, torch.float16, {**t, "input": view})
    check_backward(case, torch.float16, {**t, "input": view})


def test_channels_last_input_is_not_copied():
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    assert launch.channels_last(x) is x
    y = torch.randn(2, 3, 4, 5)
    converted = launch.channels_last(y)
    assert converted.stride(1) == 1 and torch.equal(converted, y)


def test_grid_over_the_cuda_limit_raises_naming_the_count():
    def never(*args, **kwargs):
        raise AssertionError("launched")

    with pytest.raises(
        ValueError, match=r"pixel tiles \* offset groups = 2147483648 programs exceed CUDA's grid limit"
    ):
        runtime.launch(never, 2**31, (), {}, "pixel tiles * offset groups")


@pytest.mark.parametrize("name", ["batch * out_h * out_w", "height * width"])
def test_pixel_counts_over_int32_raise(name):
    with pytest.raises(ValueError, match=rf"{name.replace('*', '[*]')} must be at most \d+ .*got 2147483648"):
        runtime.check_pixels(name, 2**31)


def test_every_kernel_runs_on_a_one_dimensional_grid():
    """Tile indices come from the program id, so grid dimensions y and z (65,535 at most) stay 1."""
    grids = []

    def record(kernel, grid, args, options):
        grids.append((kernel.fn.__name__ if hasattr(kernel, "fn") else str(kernel), grid))

    # Many groups and offset groups: the counts that used to be grid dimensions y and z.
    case = Case(batch=1, in_channels=8, out_channels=8, groups=8, offset_groups=8, size=(3, 3))
    t = tensors(case, torch.float32)
    with runtime.launch_hook(record, 80):
        forward.deform_conv2d_forward(*forward_args(case, t))
        backward.deform_conv2d_backward(*backward_args(case, t))
    assert len(grids) == 3
    assert all(len(grid) == 1 for _, grid in grids)
