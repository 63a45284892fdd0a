"""``deformconv bench --op msda``: multi-scale deformable attention against its grid_sample formulation.

Times the forward and the forward+backward of :func:`deformconv.multi_scale_deform_attn` on every
backend that runs on the device, side by side in one process with :func:`grid_sample_attention`
(the pure-PyTorch formulation of Deformable DETR's and mmcv's CPU path, one ``F.grid_sample`` per
level), on the shapes of a Deformable DETR encoder layer (every pixel of the four levels is a
query) and decoder layer (300 queries), and reports the peak extra memory of one forward+backward.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

import deformconv
from deformconv.bench import DTYPES, environment, use_threads
from deformconv.measure import interleaved_medians, peak_extra_mb


def grid_sample_attention(
    value: Tensor, spatial_shapes: list[tuple[int, int]], sampling_locations: Tensor, attention_weights: Tensor
) -> Tensor:
    """Multi-scale deformable attention written with one ``F.grid_sample`` per level.

    Args:
        value (Tensor[N, S, M, D]), sampling_locations (Tensor[N, Lq, M, L, P, 2]),
        attention_weights (Tensor[N, Lq, M, L, P]): as in :func:`deformconv.multi_scale_deform_attn`.
        spatial_shapes: ``[(H_0, W_0), ...]``.

    Returns:
        Tensor[N, Lq, M*D].
    """
    batch, _, heads, channels = value.shape
    queries, points = sampling_locations.shape[1], sampling_locations.shape[4]
    output = value.new_zeros(batch * heads, channels, queries)
    start = 0
    for level, (height, width) in enumerate(spatial_shapes):
        # [N, H*W, M, D] -> [N*M, D, H, W]
        image = (
            value[:, start : start + height * width].permute(0, 2, 3, 1).reshape(batch * heads, channels, height, width)
        )
        start += height * width
        # [N, Lq, M, P, 2] -> [N*M, Lq, P, 2] in grid_sample's [-1, 1]
        grid = 2 * sampling_locations[:, :, :, level].transpose(1, 2).flatten(0, 1) - 1
        sampled = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        weights = attention_weights[:, :, :, level].transpose(1, 2).reshape(batch * heads, 1, queries, points)
        output = output + (sampled * weights).sum(-1)
    return output.view(batch, heads * channels, queries).transpose(1, 2)


@dataclass(frozen=True)
class AttnShape:
    """One benchmark geometry: batch N, heads M, channels per head D, points P, levels, queries Lq (0: S)."""

    name: str
    batch: int
    heads: int
    channels: int
    points: int
    levels: tuple[tuple[int, int], ...]
    queries: int

    @property
    def num_value(self) -> int:
        return sum(h * w for h, w in self.levels)

    @property
    def num_queries(self) -> int:
        return self.queries or self.num_value


# Deformable DETR (ResNet-50, ~800x1216 input): levels at strides 8, 16, 32, 64.
DETR_LEVELS = ((100, 152), (50, 76), (25, 38), (13, 19))
MSDA_SHAPES = {
    shape.name: shape
    for shape in (
        AttnShape("encoder", 2, 8, 32, 4, DETR_LEVELS, 0),
        AttnShape("decoder", 2, 8, 32, 4, DETR_LEVELS, 300),
    )
}


def reduced(shape: AttnShape, batch: int | None, levels: int | None) -> AttnShape:
    """``shape`` with a smaller batch and/or only its ``levels`` smallest levels (for slow machines)."""
    kept = shape.levels if levels is None else shape.levels[len(shape.levels) - levels :]
    batch = shape.batch if batch is None else batch
    if (batch, kept) == (shape.batch, shape.levels):
        return shape
    name = f"{shape.name}[N={batch},L={len(kept)}]"
    return dataclasses.replace(shape, name=name, batch=batch, levels=kept)


def make_inputs(shape: AttnShape, dtype: torch.dtype, device: str) -> dict[str, Tensor]:
    """Random value; locations as a layer makes them: a reference point per query plus offsets of ~2 pixels.

    Attention weights are a softmax over the ``L*P`` points of each head.
    """
    g = torch.Generator().manual_seed(0)
    n, q, m, p, levels = shape.batch, shape.num_queries, shape.heads, shape.points, len(shape.levels)
    sizes = torch.tensor([[w, h] for h, w in shape.levels], dtype=torch.float64)
    reference = torch.rand(n, q, 1, 1, 1, 2, generator=g, dtype=torch.float64)
    offsets = torch.randn(n, q, m, levels, p, 2, generator=g, dtype=torch.float64) * 2 / sizes[:, None, :]
    weights = torch.randn(n, q, m, levels * p, generator=g).softmax(-1).view(n, q, m, levels, p)
    spatial_shapes = torch.tensor(shape.levels, dtype=torch.int64, device=device)
    areas = spatial_shapes[:, 0] * spatial_shapes[:, 1]

    def leaf(tensor: Tensor) -> Tensor:
        return tensor.to(device=device, dtype=dtype).requires_grad_()

    return {
        "value": leaf(torch.randn(n, shape.num_value, m, shape.channels, generator=g)),
        "spatial_shapes": spatial_shapes,
        "level_start_index": torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]]),
        "sampling_locations": leaf(reference + offsets),
        "attention_weights": leaf(weights),
    }


def implementations(shape: AttnShape, device: str, names: list[str] | None) -> dict[str, Callable[..., Tensor]]:
    """``{name: f(value, spatial_shapes, level_start_index, locations, weights)}``: grid_sample, then every backend."""

    def grid_sample(value, spatial_shapes, level_start_index, locations, weights):
        return grid_sample_attention(value, list(shape.levels), locations, weights)

    def backend(name: str) -> Callable[..., Tensor]:
        def run(*args):
            with deformconv.use_backend(name):
                return deformconv.multi_scale_deform_attn(*args)

        return run

    impls: dict[str, Callable[..., Tensor]] = {"grid_sample": grid_sample}
    device_type = torch.device(device).type
    for name, state in deformconv.backends().items():
        runs_here = state["available"] and ("any" in state["devices"] or device_type in state["devices"])
        if runs_here and "multi_scale_deform_attn" in state["ops"]:
            impls[name] = backend(name)
    if names:
        impls = {k: v for k, v in impls.items() if k == "grid_sample" or k in names}
    return impls


@dataclass
class AttnResult:
    """Timings of one implementation on one shape (milliseconds; ratios: grid_sample time / this time)."""

    shape: str
    impl: str
    forward_ms: float
    forward_backward_ms: float
    forward_speedup: float
    forward_backward_speedup: float
    peak_extra_mb: float | None  # of one forward+backward


def bench_shape(shape: AttnShape, args: argparse.Namespace) -> list[AttnResult]:
    """Times every implementation on ``shape``, side by side (interleaved) in this process."""
    tensors = make_inputs(shape, DTYPES[args.dtype], args.device)
    arguments = tuple(tensors.values())
    wrt = (tensors["value"], tensors["sampling_locations"], tensors["attention_weights"])
    forwards: dict[str, Callable[[], object]] = {}
    steps: dict[str, Callable[[], object]] = {}
    for impl, fn in implementations(shape, args.device, args.backends).items():

        def forward(fn=fn):
            with torch.no_grad():
                return fn(*arguments)

        def forward_backward(fn=fn):
            out = fn(*arguments)
            return torch.autograd.grad(out, wrt, torch.ones_like(out))

        forwards[impl], steps[impl] = forward, forward_backward
    repeat = {impl: max(1, args.repeat // 4) if impl in args.slow else args.repeat for impl in forwards}
    forward_ms = interleaved_medians(forwards, args.device, args.warmup, repeat)
    step_ms = interleaved_medians(steps, args.device, args.warmup, repeat)
    return [
        AttnResult(
            shape=shape.name,
            impl=impl,
            forward_ms=forward_ms[impl],
            forward_backward_ms=step_ms[impl],
            forward_speedup=forward_ms["grid_sample"] / forward_ms[impl],
            forward_backward_speedup=step_ms["grid_sample"] / step_ms[impl],
            peak_extra_mb=None if args.no_memory else peak_extra_mb(steps[impl], args.device),
        )
        for impl in forwards
    ]


TABLE_HEADER = (
    "| shape | impl | forward ms | speed-up | fwd+bwd ms | speed-up | peak extra MiB |\n"
    "|---|---|---:|---:|---:|---:|---:|"
)


def format_row(r: AttnResult) -> str:
    """One Markdown table row (columns of TABLE_HEADER); speed-ups are over grid_sample."""
    memory = "-" if r.peak_extra_mb is None else f"{r.peak_extra_mb:.1f}"
    return (
        f"| {r.shape} | {r.impl} | {r.forward_ms:.1f} | {r.forward_speedup:.1f}x | "
        f"{r.forward_backward_ms:.1f} | {r.forward_backward_speedup:.1f}x | {memory} |"
    )


def _msda_shape_names(text: str) -> list[str]:
    names = list(MSDA_SHAPES) if text == "all" else text.split(",")
    unknown = [n for n in names if n not in MSDA_SHAPES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown shape(s) {unknown}; choose from {list(MSDA_SHAPES)} or 'all'")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``--op msda`` (the others are shared with the deform_conv2d benchmark)."""
    parser.add_argument(
        "--msda-shapes",
        type=_msda_shape_names,
        default=list(MSDA_SHAPES),
        help=f"with --op msda: comma-separated names from {', '.join(MSDA_SHAPES)}, or 'all' (default)",
    )
    parser.add_argument("--msda-batch", type=int, default=None, help="with --op msda: override the batch N")
    parser.add_argument(
        "--msda-levels", type=int, default=None, help="with --op msda: keep only the smallest K levels (K in 1..4)"
    )


def run(args: argparse.Namespace) -> int:
    with use_threads(args.threads):
        env = {**environment(args), "op": "multi_scale_deform_attn"}
        print("# " + ", ".join(f"{k}={v}" for k, v in env.items()))
        print(TABLE_HEADER, flush=True)
        results: list[AttnResult] = []
        for name in args.msda_shapes:
            shape = reduced(MSDA_SHAPES[name], args.msda_batch, args.msda_levels)
            for result in bench_shape(shape, args):
                print(format_row(result), flush=True)
                results.append(result)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"environment": env, "results": [asdict(r) for r in results]}, handle, indent=2)
    return 0
