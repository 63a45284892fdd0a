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

The rule is applied in one place, an autocast kernel registered on the operator (for every
operator that opts in with :func:`register_autocast`), so the public functions, a direct
``torch.ops.deformconv.*`` call and an exported program run under autocast all cast the same
way. The region's dtype is read at every call, so one registration serves bfloat16 and float16
(``torch.library.register_autocast`` would fix the dtype when it is registered).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _autocast_keys() -> dict[str, str]:
    """``{device type: autocast dispatch key}`` for every device type torch has autocast for."""
    keys = {}
    for key in dir(torch._C.DispatchKey):
        device_type = key.removeprefix("Autocast").lower()
        if key.startswith("Autocast") and device_type != "privateuse1" and torch.amp.is_autocast_available(device_type):
            keys[device_type] = key
    return keys


AUTOCAST_KEYS = _autocast_keys()

_library = torch.library.Library("deformconv", "IMPL")


def _castable(value: object, device_type: str) -> bool:
    # Autocast leaves float64 alone, as it does for conv2d.
    return (
        isinstance(value, Tensor)
        and value.is_floating_point()
        and value.dtype != torch.float64
        and value.device.type == device_type
    )


def register_autocast(op_name: str) -> None:
    """Registers the autocast kernel of ``deformconv::<op_name>`` for every device in ``AUTOCAST_KEYS``.

    Inside an autocast region, every floating-point tensor argument of the region's device that
    is not float64 is cast to the region's dtype before the op runs.
    """
    op = getattr(torch.ops.deformconv, op_name).default
    for device_type, key in AUTOCAST_KEYS.items():
        exclude = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))

        def autocast_kernel(keyset, *args, _device_type=device_type, _exclude=exclude):
            dtype = torch.get_autocast_dtype(_device_type)
            cast = [arg.to(dtype) if _castable(arg, _device_type) else arg for arg in args]
            # Run the op below autocast, as torch.library.register_autocast does: otherwise this
            # kernel would be called again.
            with torch._C._ExcludeDispatchKeyGuard(_exclude):
                return op(*cast)

        _library.impl(op_name, autocast_kernel, key, with_keyset=True)
