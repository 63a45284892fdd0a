"""Mixed precision: under torch.autocast the op runs in the low precision dtype, accumulating in float32."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import deformconv
from cases import BASE
from deformconv.nn import ModulatedDeformConv2dPack
from deploy_helpers import randomize_offsets
from helpers import assert_close_to_scale

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
SETTINGS = [
    pytest.param("cpu", torch.bfloat16, id="cpu-bfloat16"),
    pytest.param("cpu", torch.float16, id="cpu-float16"),
    pytest.param("cuda", torch.float16, id="cuda-float16", marks=CUDA),
    pytest.param("cuda", torch.bfloat16, id="cuda-bfloat16", marks=CUDA),
]
# Largest error against float32, relative to the largest magnitude of the result (see README):
# the functional op / a Pack layer, whose offsets also come from a low precision convolution.
OP_TOLERANCE = {torch.bfloat16: 2e-2, torch.float16: 4e-3}
PACK_TOLERANCE = {torch.bfloat16: 4e-2, torch.float16: 6e-3}
CASE = BASE.vary(in_channels=16, out_channels=8, offset_groups=2, size=(9, 11))


def float32_tensors(device: str, seed: int = 0, requires_grad: bool = False) -> dict[str, torch.Tensor]:
    return {k: v.float().requires_grad_(requires_grad) for k, v in CASE.tensors(seed=seed, device=device).items()}


@pytest.mark.parametrize("device,dtype", SETTINGS)
def test_output_is_float32_accumulation_rounded_once(device, dtype):
    tensors = float32_tensors(device)
    with torch.autocast(device, dtype=dtype):
        out = deformconv.deform_conv2d(**tensors, **CASE.params())
    assert out.dtype == dtype
    # The same (rounded) inputs computed in float32, rounded once at the end. A kernel that
    # accumulated in the low precision dtype would be off by many of its ulps.
    rounded = {k: v.to(dtype).float() for k, v in tensors.items()}
    expected = deformconv.deform_conv2d(**rounded, **CASE.params())
    scale = expected.abs().max().item()
    torch.testing.assert_close(out.float(), expected, rtol=torch.finfo(dtype).eps, atol=1e-4 * scale)
    assert_close_to_scale(out, deformconv.deform_conv2d(**tensors, **CASE.params()), OP_TOLERANCE[dtype], min_scale=0.0)


@pytest.mark.parametrize("device,dtype", SETTINGS)
def test_gradients_are_float32_and_match(device, dtype):
    tensors = float32_tensors(device, requires_grad=True)
    with torch.autocast(device, dtype=dtype):
        out = deformconv.deform_conv2d(**tensors, **CASE.params())
    grads = torch.autograd.grad(out.float().square().sum(), list(tensors.values()))
    # Reference: float32 at the rounded inputs. The offset gradient is the floor formula's
    # one-sided difference, which jumps where rounding moves a sample point across an integer
    # coordinate, so it is only comparable at the same (rounded) sample points.
    rounded = {k: v.detach().to(dtype).float().requires_grad_() for k, v in tensors.items()}
    expected = deformconv.deform_conv2d(**rounded, **CASE.params())
    expected_grads = torch.autograd.grad(expected.to(dtype).float().square().sum(), list(rounded.values()))
    for name, grad, want in zip(tensors, grads, expected_grads):
        assert grad.dtype == torch.float32, name
        assert_close_to_scale(grad, want, OP_TOLERANCE[dtype] / 2, min_scale=0.0)


def test_mixed_dtypes_are_accepted_inside_autocast_only():
    tensors = float32_tensors("cpu")
    tensors["offset"] = tensors["offset"].bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert deformconv.deform_conv2d(**tensors, **CASE.params()).dtype == torch.bfloat16
    with pytest.raises(TypeError, match="offset must have the dtype of input"):
        deformconv.deform_conv2d(**tensors, **CASE.params())


def test_float64_is_left_alone():
    tensors = CASE.tensors(torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = deformconv.deform_conv2d(**tensors, **CASE.params())
    assert out.dtype == torch.float64


def test_direct_op_call_and_compiled_function_are_cast():
    t = float32_tensors("cpu")
    args = (t["input"], t["offset"], t["mask"], t["weight"], t["bias"], [1, 1], [1, 1], [1, 1], 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        direct = torch.ops.deformconv.deform_conv2d(*args)
        eager = deformconv.deform_conv2d(**t, **CASE.params())
        compiled = torch.compile(deformconv.deform_conv2d, fullgraph=True, backend="aot_eager")(**t, **CASE.params())
    assert direct.dtype == compiled.dtype == torch.bfloat16
    torch.testing.assert_close(direct, eager, rtol=0, atol=0)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)


@pytest.mark.parametrize("device,dtype", SETTINGS)
def test_pack_layer_starts_as_the_convolution(device, dtype):
    """At initialisation the offsets are exactly 0 and the mask exactly 1 in any precision."""
    layer = ModulatedDeformConv2dPack(8, 8, 3, padding=1).to(device)
    input = torch.randn(2, 8, 10, 10, device=device)
    with torch.autocast(device, dtype=dtype):
        offset, mask = layer.offsets_and_mask(input)
        out = layer(input)
        conv = F.conv2d(input, layer.weight, layer.bias, padding=1)
    assert offset.dtype == mask.dtype == out.dtype == dtype
    assert (offset == 0).all() and (mask == 1).all()
    torch.testing.assert_close(out, conv, rtol=torch.finfo(dtype).eps, atol=1e-3)


@pytest.mark.parametrize("device,dtype", SETTINGS)
def test_pack_layer_trains_sanely(device, dtype):
    """The offset convolution runs under autocast like any convolution; its float32 weights
    get float32 gradients that point the same way as in float32 training."""
    torch.manual_seed(0)
    layer = randomize_offsets(ModulatedDeformConv2dPack(16, 8, 3, padding=1, offset_groups=2), pixels=2.0)
    layer = layer.to(device)
    input = torch.randn(2, 16, 12, 12, device=device)
    expected = layer(input)
    expected.square().sum().backward()
    expected_grads = {name: p.grad.clone() for name, p in layer.named_parameters()}
    layer.zero_grad()
    with torch.autocast(device, dtype=dtype):
        out = layer(input)
    out.float().square().sum().backward()
    assert_close_to_scale(out, expected, PACK_TOLERANCE[dtype], min_scale=0.0)
    for name, param in layer.named_parameters():
        assert param.grad.dtype == torch.float32 and param.grad.isfinite().all(), name
        cosine = F.cosine_similarity(param.grad.flatten(), expected_grads[name].flatten(), dim=0)
        assert cosine > 0.98, (name, cosine.item())
