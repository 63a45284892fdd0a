"""``deformconv check``: compares every available backend with the reference on random inputs.

For each backend that runs on the chosen device, the forward output and every gradient
(input, offset, mask, weight, bias) are compared with the pure-PyTorch reference over a few
configurations (groups, offset groups, stride, dilation, with and without mask).
"""

from __future__ import annotations

import argparse

import torch

import deformconv
from deformconv.ops.deform_conv2d.geometry import output_size

# (N, C_in, C_out, H, W, kernel, stride, padding, dilation, groups, offset_groups, modulated)
CONFIGS = (
    (2, 8, 8, 9, 11, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, True),
    (3, 8, 12, 10, 7, (3, 5), (2, 1), (1, 2), (1, 2), 2, 4, True),
    (1, 6, 6, 8, 8, (1, 1), (1, 1), (0, 0), (1, 1), 3, 2, False),
    (2, 4, 8, 12, 12, (3, 3), (2, 2), (2, 2), (2, 2), 1, 2, False),
)

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 1e-2}


def _random_case(config, dtype: torch.dtype, device: str, generator: torch.Generator):
    n, cin, cout, h, w, kernel, stride, padding, dilation, groups, offset_groups, modulated = config
    out_h, out_w = output_size((h, w), kernel, stride, padding, dilation)
    points = kernel[0] * kernel[1]

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=generator) * scale).to(device=device, dtype=dtype)

    tensors = {
        "input": rand(n, cin, h, w),
        "offset": rand(n, 2 * offset_groups * points, out_h, out_w, scale=2.0),
        "weight": rand(cout, cin // groups, *kernel),
        "bias": rand(cout),
    }
    if modulated:
        tensors["mask"] = torch.rand(n, offset_groups * points, out_h, out_w, generator=generator).to(
            device=device, dtype=dtype
        )
    params = {"stride": stride, "padding": padding, "dilation": dilation}
    return tensors, params


def _outputs(backend: str, tensors: dict, params: dict) -> list[torch.Tensor]:
    leaves = {k: v.detach().clone().requires_grad_() for k, v in tensors.items()}
    with deformconv.use_backend(backend):
        out = deformconv.deform_conv2d(**leaves, **params)
        grad = torch.ones_like(out).cumsum(-1) / out.shape[-1]
        grads = torch.autograd.grad(out, list(leaves.values()), grad)
    return [out.detach(), *grads]


def compare(backend: str, dtype: torch.dtype, device: str, seed: int = 0) -> float:
    """Largest relative error of ``backend`` against the reference over :data:`CONFIGS`."""
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for config in CONFIGS:
        tensors, params = _random_case(config, dtype, device, generator)
        for got, want in zip(_outputs(backend, tensors, params), _outputs("reference", tensors, params)):
            scale = want.abs().max().clamp_min(1.0)
            worst = max(worst, float(((got.double() - want.double()).abs().max() / scale).cpu()))
    return worst


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="device to check (default: cpu)")
    parser.add_argument(
        "--dtype", nargs="+", default=["float64", "float32"], choices=["float64", "float32", "bfloat16", "float16"]
    )


def run(args: argparse.Namespace) -> int:
    device_type = torch.device(args.device).type
    names = [
        name
        for name, state in deformconv.backends().items()
        if state["available"] and name != "reference" and device_type in state["devices"]
    ]
    if not names:
        print(f"only the reference backend runs on {device_type}: nothing to compare")
        return 0
    failed = False
    for name in names:
        for dtype_name in args.dtype:
            dtype = getattr(torch, dtype_name)
            error = compare(name, dtype, args.device)
            ok = error <= TOLERANCE[dtype]
            failed |= not ok
            status = "ok" if ok else "MISMATCH"
            print(
                f"{name:<8} {dtype_name:<9} max relative error {error:.2e} (tolerance {TOLERANCE[dtype]:.0e}): {status}"
            )
    return 1 if failed else 0
