"""``deformconv bench --op dcnv3|dcnv4``: DCNv3 / DCNv4 against their pure-PyTorch formulation and a depthwise conv.

The shape is the official operators' benchmark (3x3 kernel, stride 1, pad 1, G=4 groups of 32
channels, 56x56), with a batch reduced for CPUs (``--dcn-batch``, default 2). For each it times, in
one process and interleaved: a depthwise 3x3 ``F.conv2d`` with as many channels (the cost of
reading every input pixel nine times without sampling), the official pure-PyTorch formulation
(:func:`pytorch_formulation`: ``grid_sample`` on the padded input, as InternImage's
``dcnv3_core_pytorch``), and every deformconv backend that runs on the device. It prints the
median forward and forward+backward times, their ratios to the pure-PyTorch formulation and to
the depthwise conv, and the peak extra memory of one forward+backward.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

import deformconv
from deformconv.measure import interleaved_medians, peak_extra_mb
from deformconv.ops.dcnv4.layout import packed_width, unpack


def pytorch_formulation(
    input: Tensor,
    offset: Tensor,
    mask: Tensor,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    group: int,
    group_channels: int,
    offset_scale: float,
    remove_center: bool,
) -> Tensor:
    """DCNv3 as the official pure-PyTorch code computes it: ``grid_sample`` on the zero-padded input.

    Reference points sit at the dilated kernel's centre + 0.5, normalised by the padded size, and
    ``grid_sample(align_corners=False, padding_mode="zeros")`` reads pixel ``loc*size - 0.5``.
    Differentiable by autograd; shapes as in :func:`deformconv.dcnv3`.
    """
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    padded = F.pad(input, (0, 0, pw, pw, ph, ph))
    batch, height, width, _ = padded.shape
    _, out_h, out_w, _ = offset.shape
    cy, cx = dh * (kh - 1) // 2, dw * (kw - 1) // 2
    ref_x = (cx + 0.5 + torch.arange(out_w, dtype=input.dtype, device=input.device) * sw) / width
    ref_y = (cy + 0.5 + torch.arange(out_h, dtype=input.dtype, device=input.device) * sh) / height
    taps = [(i * dw - cx, j * dh - cy) for i in range(kw) for j in range(kh)]
    if remove_center:
        del taps[(kh * kw - 1) // 2]
    points = len(taps)
    norm = torch.tensor([width, height], dtype=input.dtype, device=input.device)
    taps = torch.tensor(taps, dtype=input.dtype, device=input.device) / norm
    ref = torch.stack(torch.broadcast_tensors(ref_x[None, :], ref_y[:, None]), -1)  # [Ho, Wo, 2]
    loc = ref[None, :, :, None, None] + taps * offset_scale
    loc = loc + offset.view(batch, out_h, out_w, group, points, 2) * offset_scale / norm
    grid = (2 * loc - 1).view(batch, out_h * out_w, group, points, 2).transpose(1, 2).flatten(0, 1)
    image = padded.view(batch, height * width, group * group_channels).transpose(1, 2)
    image = image.reshape(batch * group, group_channels, height, width)
    sampled = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    weight = mask.view(batch, out_h * out_w, group, points).transpose(1, 2)
    output = (sampled * weight.reshape(batch * group, 1, out_h * out_w, points)).sum(-1)
    return output.view(batch, group * group_channels, out_h * out_w).transpose(1, 2).reshape(batch, out_h, out_w, -1)


SIZE, GROUP, GROUP_CHANNELS, POINTS = (56, 56), 4, 32, 9
PARAMS = ((3, 3), (1, 1), (1, 1), (1, 1), GROUP, GROUP_CHANNELS, 1.0, False)


def make_inputs(op: str, batch: int, dtype: torch.dtype, device: str) -> list[Tensor]:
    """``[input, offset, mask]`` (DCNv3) or ``[input, offset_mask]`` (DCNv4); offsets ~ N(0, 1) pixels."""
    generator = torch.Generator().manual_seed(0)
    channels = GROUP * GROUP_CHANNELS

    def tensor(*size: int) -> Tensor:
        return torch.randn(*size, generator=generator).to(device=device, dtype=dtype).requires_grad_()

    input = tensor(batch, *SIZE, channels)
    if op == "dcnv4":
        return [input, tensor(batch, *SIZE, packed_width(GROUP, POINTS))]
    mask = torch.softmax(torch.randn(batch, *SIZE, GROUP, POINTS, generator=generator), -1).flatten(-2)
    return [input, tensor(batch, *SIZE, GROUP * POINTS * 2), mask.to(device=device, dtype=dtype).requires_grad_()]


def implementations(op: str, device: str, names: list[str] | None) -> dict[str, Callable[..., Tensor]]:
    """``{name: f(*tensors)}``: depthwise conv, the pure-PyTorch formulation, then every backend."""
    channels = GROUP * GROUP_CHANNELS
    weight = torch.randn(channels, 1, 3, 3, device=device)

    def depthwise(input, *offsets):
        return F.conv2d(input.permute(0, 3, 1, 2), weight.to(input.dtype), padding=1, groups=channels)

    def formulation(input, *offsets):
        if op == "dcnv4":
            offset, mask = unpack(offsets[0], GROUP, POINTS)
            offsets = (offset.flatten(-3), mask.flatten(-2))
        return pytorch_formulation(input, *offsets, *PARAMS)

    def backend(name: str) -> Callable[..., Tensor]:
        function = deformconv.dcnv4 if op == "dcnv4" else deformconv.dcnv3

        def run(*tensors):
            with deformconv.use_backend(name):
                return function(*tensors, 3, 3, 1, 1, 1, 1, 1, 1, GROUP, GROUP_CHANNELS)

        return run

    impls: dict[str, Callable[..., Tensor]] = {"depthwise-conv": depthwise, "pytorch": formulation}
    device_type = torch.device(device).type
    for name, state in deformconv.backends().items():
        if state["available"] and op in state["ops"]:
            if "any" in state["devices"] or device_type in state["devices"]:
                impls[name] = backend(name)
    if names:
        impls = {k: v for k, v in impls.items() if k in ("depthwise-conv", "pytorch") or k in names}
    return impls


TABLE_HEADER = (
    "| op | impl | forward ms | x pytorch | x dw-conv | fwd+bwd ms | x pytorch | x dw-conv | peak extra MiB |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|"
)


def bench_rows(args: argparse.Namespace, dtype: torch.dtype) -> list[dict[str, object]]:
    """Times every implementation of ``args.op``; prints and returns one row per implementation."""
    tensors = make_inputs(args.op, args.dcn_batch, dtype, args.device)
    forwards: dict[str, Callable[[], object]] = {}
    steps: dict[str, Callable[[], object]] = {}
    for impl, fn in implementations(args.op, args.device, args.backends).items():
        wrt = tensors[:1] if impl == "depthwise-conv" else tensors

        def forward(fn=fn):
            with torch.no_grad():
                return fn(*tensors)

        def forward_backward(fn=fn, wrt=wrt):
            out = fn(*tensors)
            return torch.autograd.grad(out, wrt, torch.ones_like(out))

        forwards[impl], steps[impl] = forward, forward_backward
    repeat = {impl: max(1, args.repeat // 4) if impl in args.slow else args.repeat for impl in forwards}
    forward_ms = interleaved_medians(forwards, args.device, args.warmup, repeat)
    step_ms = interleaved_medians(steps, args.device, args.warmup, repeat)
    print(f"# {args.op}: batch {args.dcn_batch}, {SIZE[0]}x{SIZE[1]}, 3x3, G={GROUP}, group_channels={GROUP_CHANNELS}")
    print(TABLE_HEADER)
    rows = []
    for impl in forwards:
        memory = None if args.no_memory else peak_extra_mb(steps[impl], args.device)
        row = {
            "op": args.op,
            "impl": impl,
            "forward_ms": forward_ms[impl],
            "forward_vs_pytorch": forward_ms[impl] / forward_ms["pytorch"],
            "forward_vs_depthwise": forward_ms[impl] / forward_ms["depthwise-conv"],
            "forward_backward_ms": step_ms[impl],
            "forward_backward_vs_pytorch": step_ms[impl] / step_ms["pytorch"],
            "forward_backward_vs_depthwise": step_ms[impl] / step_ms["depthwise-conv"],
            "peak_extra_mb": memory,
        }
        print(
            f"| {args.op} | {impl} | {row['forward_ms']:.2f} | {row['forward_vs_pytorch']:.2f} | "
            f"{row['forward_vs_depthwise']:.2f} | {row['forward_backward_ms']:.2f} | "
            f"{row['forward_backward_vs_pytorch']:.2f} | {row['forward_backward_vs_depthwise']:.2f} | "
            f"{'-' if memory is None else f'{memory:.1f}'} |",
            flush=True,
        )
        rows.append(row)
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``--op dcnv3|dcnv4`` (the others are shared with the deform_conv2d benchmark)."""
    parser.add_argument("--dcn-batch", type=int, default=2, help="with --op dcnv3|dcnv4: the batch (default 2)")


def run(args: argparse.Namespace) -> int:
    """``deformconv bench --op dcnv3|dcnv4``: prints the environment and the table, writes ``--json``."""
    from deformconv.bench import DTYPES, environment, use_threads

    with use_threads(args.threads):
        env = {**environment(args), "op": args.op}
        print("# " + ", ".join(f"{k}={v}" for k, v in env.items()))
        rows = bench_rows(args, DTYPES[args.dtype])
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"environment": env, "results": rows}, handle, indent=2)
    return 0
