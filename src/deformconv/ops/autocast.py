"""Mixed precision: what ``deform_conv2d`` does under ``torch.autocast``.

The op follows autocast's rule for ``conv2d`` (its "lower precision" list): inside an
autocast region for the device of ``input``, every floating-point tensor argument that is
not float64 (input, offset, mask, weight, bias) is cast to the region's dtype (e.g.
``torch.autocast("cpu", dtype=torch.bfloat16)``, ``torch.autocast("cuda")`` for float16),
and the op runs in that dtype. Every kernel computes sample coordinates, bilinear weights and
the matrix product in float32 and rounds the output once to the low precision dtype; the
backward op accumulates in float32 the same way. Gradients reach float32 parameters in
float32, through the casts.

Offsets and mask use the low precision dtype too, as ``conv2d`` would produce them: the offsets
come from an ordinary convolution that autocast already runs in that dtype. In bfloat16 an
offset keeps 8 significant bits, so an offset below 4 pixels is off by at most 1/128 pixel,
less than the rounding of the input values themselves; float16 keeps 11 bits.

Two places apply the rule: :func:`cast_for_autocast`, which the public ``deform_conv2d`` calls
before validating its arguments (so mixed dtypes inside an autocast region are accepted), and
an autocast kernel registered at import on the ``deformconv::deform_conv2d`` operator, so a
direct ``torch.ops.deformconv.deform_conv2d`` call, or an exported program run under
autocast, casts the same way. The region's dtype is read at every call, so one registration
serves bfloat16 and float16.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Dispatch key of autocast for each device type that deformconv runs on.
AUTOCAST_KEYS = {"cpu": "AutocastCPU", "cuda": "AutocastCUDA"}

_library = torch.library.Library("deformconv", "IMPL")


def _castable(value: object, device_type: str) -> bool:
    # Autocast leaves float64 alone, as it does for conv2d.
    return (
        isinstance(value, Tensor)
        and value.is_floating_point()
        and value.dtype != torch.float64
        and value.device.type == device_type
    )


def cast_for_autocast(
    input: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor | None]:
    """Casts the op's tensors to the autocast dtype when autocast is on for ``input``'s device.

    Outside an autocast region (or for a device without autocast support here), and for
    anything that is not a floating-point tensor of that device, the arguments come back
    unchanged; validation then reports any problem with them.

    Args:
        input (Tensor[N, C_in, H, W]): input feature map.
        offset (Tensor[N, 2*G*kh*kw, H_out, W_out]): offsets.
        mask (Tensor[N, G*kh*kw, H_out, W_out], optional): modulation.
        weight (Tensor[C_out, C_in/groups, kh, kw]): convolution weight.
        bias (Tensor[C_out], optional): bias.

    Returns:
        ``(input, offset, mask, weight, bias)``, cast where autocast applies.
    """
    tensors = (input, offset, mask, weight, bias)
    if not isinstance(input, Tensor):
        return tensors
    device_type = input.device.type
    if device_type not in AUTOCAST_KEYS or not torch.is_autocast_enabled(device_type):
        return tensors
    dtype = torch.get_autocast_dtype(device_type)
    return tuple(t.to(dtype) if _castable(t, device_type) else t for t in tensors)  # type: ignore[return-value]


def _register(device_type: str) -> None:
    key = AUTOCAST_KEYS[device_type]
    exclude = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))

    def autocast_kernel(keyset, input, offset, mask, weight, bias, *conv_args):
        cast = cast_for_autocast(input, offset, mask, weight, bias)
        # Run the op below autocast, as torch.library.register_autocast does: otherwise this
        # kernel would be called again.
        with torch._C._ExcludeDispatchKeyGuard(exclude):
            return torch.ops.deformconv.deform_conv2d.default(*cast, *conv_args)

    _library.impl("deform_conv2d", autocast_kernel, key, with_keyset=True)


for _device_type in AUTOCAST_KEYS:
    _register(_device_type)
