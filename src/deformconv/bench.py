"""``deformconv bench``: forward and forward+backward time of every kernel against F.conv2d.

For each benchmark shape (those of the design notes, or the ones named with ``--shapes``) it
times ``F.conv2d`` of the same geometry, each deformconv backend that runs on the device (the
pure-PyTorch reference, the C++ kernels on CPU, Triton on CUDA) and
``torchvision.ops.deform_conv2d`` when torchvision imports, and prints the median time of
``--repeat`` runs after ``--warmup`` runs, the ratio of each to F.conv2d, and the peak extra
memory of one forward+backward. ``--against onnxruntime`` also times onnxruntime's ``DeformConv``
forward on the same tensors (see :mod:`deformconv.bench_onnxruntime`) in the same rounds, and adds
its time and the ratio onnxruntime / implementation to every row.

The timings and the peak-memory measure are those of :mod:`deformconv.measure`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import platform
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

import deformconv
from deformconv.measure import interleaved_medians, peak_extra_mb
from deformconv.ops.deform_conv2d.geometry import output_size


@dataclass(frozen=True)
class Shape:
    """One benchmark geometry (3x3 kernel, padding 1, with mask, C_in = C_out)."""

    name: str
    batch: int
    channels: int
    size: tuple[int, int]
    stride: int = 1
    groups: int = 1
    offset_groups: int = 1

    @property
    def out_size(self) -> tuple[int, int]:
        stride = (self.stride, self.stride)
        return output_size(self.size, (3, 3), stride, (1, 1), (1, 1))


SHAPES = {
    shape.name: shape
    for shape in (
        Shape("r50-c3", 8, 128, (28, 28)),
        Shape("r50-c4", 8, 256, (14, 14)),
        Shape("r50-c5", 8, 512, (7, 7)),
        Shape("det-c4", 1, 256, (50, 84)),
        Shape("c3-s2", 8, 128, (56, 56), stride=2),
        Shape("x-g32", 8, 256, (14, 14), groups=32),
        Shape("dw", 8, 256, (14, 14), groups=256, offset_groups=4),
    )
}

# Operators with a benchmark module of their own (shapes and baselines of their papers); each module
# has add_arguments(parser) for its options and run(args).
OPERATOR_BENCHES = {
    "msda": "deformconv.bench_msda",
    "dcnv3": "deformconv.bench_dcn",
    "dcnv4": "deformconv.bench_dcn",
}

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class Result:
    """Timings of one implementation on one shape (milliseconds; ratios to F.conv2d)."""

    shape: str
    impl: str
    forward_ms: float
    forward_backward_ms: float
    forward_ratio: float
    forward_backward_ratio: float
    peak_extra_mb: float | None  # of one forward+backward
    onnxruntime_forward_ms: float | None = None  # with --against onnxruntime
    onnxruntime_ratio: float | None = None  # onnxruntime forward / this forward; < 1: onnxruntime faster


def make_inputs(shape: Shape, dtype: torch.dtype, device: str) -> dict[str, Tensor]:
    """Random input, weight, offset (standard normal, in pixels) and mask (uniform [0, 1])."""
    g = torch.Generator().manual_seed(0)
    points = 9 * shape.offset_groups
    out_h, out_w = shape.out_size

    def tensor(*size: int, uniform: bool = False) -> Tensor:
        data = torch.rand(*size, generator=g) if uniform else torch.randn(*size, generator=g)
        return data.to(device=device, dtype=dtype).requires_grad_()

    return {
        "input": tensor(shape.batch, shape.channels, *shape.size),
        "weight": tensor(shape.channels, shape.channels // shape.groups, 3, 3),
        "offset": tensor(shape.batch, 2 * points, out_h, out_w),
        "mask": tensor(shape.batch, points, out_h, out_w, uniform=True),
    }


def implementations(shape: Shape, device: str, names: list[str] | None) -> dict[str, Callable[..., Tensor]]:
    """``{name: f(input, weight, offset, mask)}``: F.conv2d, then every deformable kernel available."""

    def conv2d(input, weight, offset, mask):
        return F.conv2d(input, weight, stride=shape.stride, padding=1, groups=shape.groups)

    def backend(name: str) -> Callable[..., Tensor]:
        def run(input, weight, offset, mask):
            with deformconv.use_backend(name):
                return deformconv.deform_conv2d(input, offset, weight, stride=shape.stride, padding=1, mask=mask)

        return run

    impls: dict[str, Callable[..., Tensor]] = {"conv2d": conv2d}
    device_type = torch.device(device).type
    for name, state in deformconv.backends().items():
        if state["available"] and ("any" in state["devices"] or device_type in state["devices"]):
            impls[name] = backend(name)
    with contextlib.suppress(Exception):  # torchvision is optional: absent, or built for another torch
        from torchvision.ops import deform_conv2d as tv_deform_conv2d

        def torchvision(input, weight, offset, mask):
            return tv_deform_conv2d(input, offset, weight, stride=shape.stride, padding=1, mask=mask)

        impls["torchvision"] = torchvision
    if names:
        impls = {k: v for k, v in impls.items() if k == "conv2d" or k in names}
    return impls


def onnxruntime_forward(shape: Shape, tensors: dict[str, Tensor], notes: dict[str, str]) -> Callable[[], object] | None:
    """onnxruntime's forward on ``tensors``, or None with the reason added to ``notes``."""
    from deformconv.bench_onnxruntime import onnxruntime_peer

    peer = onnxruntime_peer(
        tensors["input"], tensors["weight"], tensors["offset"], tensors["mask"], stride=shape.stride, padding=1
    )
    if isinstance(peer, str):
        notes.setdefault(ONNXRUNTIME, f"skipped: {peer}")
        return None
    notes.setdefault(ONNXRUNTIME, f"onnxruntime {peer.version}, DeformConv, intra_op_num_threads={peer.threads}")
    return peer


def bench_shape(shape: Shape, args: argparse.Namespace, notes: dict[str, str] | None = None) -> list[Result]:
    """Times every implementation on ``shape``; ratios are to F.conv2d (the first result).

    With ``args.against`` holding "onnxruntime", onnxruntime's forward runs in the same rounds as the
    forwards; why it did not run (if so) goes to ``notes``.
    """
    notes = {} if notes is None else notes
    tensors = make_inputs(shape, DTYPES[args.dtype], args.device)
    arguments = (tensors["input"], tensors["weight"], tensors["offset"], tensors["mask"])
    forwards: dict[str, Callable[[], object]] = {}
    steps: dict[str, Callable[[], object]] = {}
    for impl, fn in implementations(shape, args.device, args.backends).items():
        wrt = arguments[:2] if impl == "conv2d" else arguments

        def forward(fn=fn):
            with torch.no_grad():
                return fn(*arguments)

        def forward_backward(fn=fn, wrt=wrt):
            out = fn(*arguments)
            return torch.autograd.grad(out, wrt, torch.ones_like(out))

        forwards[impl], steps[impl] = forward, forward_backward
    repeat = {impl: max(1, args.repeat // 4) if impl in args.slow else args.repeat for impl in forwards}
    peer = onnxruntime_forward(shape, tensors, notes) if ONNXRUNTIME in args.against else None
    if peer is not None:
        forwards[ONNXRUNTIME], repeat[ONNXRUNTIME] = peer, args.repeat
    forward_ms = interleaved_medians(forwards, args.device, args.warmup, repeat)
    peer_ms = forward_ms.pop(ONNXRUNTIME, None)
    forwards.pop(ONNXRUNTIME, None)
    step_ms = interleaved_medians(steps, args.device, args.warmup, repeat)
    results = []
    for impl in forwards:
        results.append(
            Result(
                shape=shape.name,
                impl=impl,
                forward_ms=forward_ms[impl],
                forward_backward_ms=step_ms[impl],
                forward_ratio=forward_ms[impl] / forward_ms["conv2d"],
                forward_backward_ratio=step_ms[impl] / step_ms["conv2d"],
                peak_extra_mb=None if args.no_memory else peak_extra_mb(steps[impl], args.device),
                onnxruntime_forward_ms=peer_ms,
                onnxruntime_ratio=None if peer_ms is None else peer_ms / forward_ms[impl],
            )
        )
    return results


ONNXRUNTIME = "onnxruntime"
TABLE_HEADER = (
    "| shape | impl | forward ms | x conv2d | fwd+bwd ms | x conv2d | peak extra MiB |\n"
    "|---|---|---:|---:|---:|---:|---:|"
)
ONNXRUNTIME_COLUMNS = (" onnxruntime fwd ms | onnxruntime / impl fwd |", "---:|---:|")


def table_header(against: list[str]) -> str:
    """The Markdown header: TABLE_HEADER, plus onnxruntime's columns when compared against it."""
    if ONNXRUNTIME not in against:
        return TABLE_HEADER
    names, rule = TABLE_HEADER.split("\n")
    return f"{names}{ONNXRUNTIME_COLUMNS[0]}\n{rule}{ONNXRUNTIME_COLUMNS[1]}"


def format_row(r: Result, against: list[str] = ()) -> str:
    """One Markdown table row (columns of :func:`table_header`)."""
    memory = "-" if r.peak_extra_mb is None else f"{r.peak_extra_mb:.1f}"
    row = (
        f"| {r.shape} | {r.impl} | {r.forward_ms:.2f} | {r.forward_ratio:.2f} | "
        f"{r.forward_backward_ms:.2f} | {r.forward_backward_ratio:.2f} | {memory} |"
    )
    if ONNXRUNTIME in against:
        if r.onnxruntime_forward_ms is None:
            row += " - | - |"
        else:
            row += f" {r.onnxruntime_forward_ms:.2f} | {r.onnxruntime_ratio:.2f} |"
    return row


def environment(args: argparse.Namespace) -> dict[str, object]:
    """What the numbers were measured on."""
    info: dict[str, object] = {
        "device": args.device,
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "deformconv": deformconv.__version__,
        "processor": platform.processor() or platform.machine(),
        "warmup": args.warmup,
        "repeat": args.repeat,
    }
    if torch.device(args.device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(args.device)
    return info


def _shape_names(text: str) -> list[str]:
    names = SHAPES if text == "all" else text.split(",")
    unknown = [n for n in names if n not in SHAPES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown shape(s) {unknown}; choose from {list(SHAPES)} or 'all'")
    return list(names)


def _peer_names(text: str) -> list[str]:
    names = text.split(",")
    unknown = [n for n in names if n != ONNXRUNTIME]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown peer(s) {unknown}; choose from ['{ONNXRUNTIME}']")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--op", choices=["deform_conv2d", *OPERATOR_BENCHES], default="deform_conv2d", help="operator to time"
    )
    for module in dict.fromkeys(OPERATOR_BENCHES.values()):
        importlib.import_module(module).add_arguments(parser)
    parser.add_argument(
        "--shapes",
        type=_shape_names,
        default=list(SHAPES),
        help=f"comma-separated names from {', '.join(SHAPES)}, or 'all' (default)",
    )
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument(
        "--threads", type=int, default=None, help="intra-op threads (torch.set_num_threads); default: PyTorch's default"
    )
    parser.add_argument(
        "--backends",
        type=lambda s: s.split(","),
        default=None,
        help="comma-separated implementations to time besides conv2d (default: all available)",
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs before timing (default 3)")
    parser.add_argument("--repeat", type=int, default=10, help="timed runs; the median is reported (default 10)")
    parser.add_argument(
        "--slow",
        type=lambda s: s.split(","),
        default=["reference", "torchvision"],
        help="implementations timed with repeat/4 runs (default: reference,torchvision)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument(
        "--against",
        type=_peer_names,
        default=[],
        metavar="PEERS",
        help="other runtimes to time alongside, forward only: onnxruntime (its DeformConv on CPU; "
        "skipped with a note when it does not import)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results and environment as JSON")


@contextlib.contextmanager
def use_threads(count: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if count is not None:
        if count < 1:
            raise ValueError(f"--threads must be >= 1, got {count}")
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run(args: argparse.Namespace) -> int:
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        print(f"deformconv bench: device {args.device!r} asked for, but CUDA is not available")
        return 2
    if args.op in OPERATOR_BENCHES:
        return importlib.import_module(OPERATOR_BENCHES[args.op]).run(args)
    with use_threads(args.threads):
        env = environment(args)
        print("# " + ", ".join(f"{k}={v}" for k, v in env.items()))
        print(table_header(args.against), flush=True)
        results: list[Result] = []
        notes: dict[str, str] = {}
        for name in args.shapes:
            for result in bench_shape(SHAPES[name], args, notes):
                print(format_row(result, args.against), flush=True)
                results.append(result)
        for peer, note in notes.items():
            print(f"# {peer}: {note}")
        env.update(notes)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"environment": env, "results": [asdict(r) for r in results]}, handle, indent=2)
    return 0
