"""``deformconv demo``: what deformable convolution buys on geometrically varied digits.

Trains a plain network and its deformable twin on scikit-learn's digits drawn at varied size,
rotation and position, for several seeds; prints a table of test accuracy inside and outside the
training range, and writes a report folder (Markdown page, PNG figures, JSON results).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from deformconv.demo.model import BODY_DEPTH
from deformconv.demo.train import TrainConfig

if TYPE_CHECKING:
    from deformconv.demo.experiment import Results

QUICK = {"epochs": 4, "seeds": 2, "train_digits": None, "test_digits": 200, "test_copies": 1, "spread_images": 8}
DEFAULT_EPOCHS = TrainConfig().epochs
DEFAULT_SEEDS = 3


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--epochs", type=_positive, default=None, help=f"training epochs (default {DEFAULT_EPOCHS}; quick: 4)"
    )
    parser.add_argument(
        "--seeds",
        type=_positive,
        default=None,
        help=f"number of seeds, 0..N-1, each training all three models (default {DEFAULT_SEEDS}; quick: 2)",
    )
    parser.add_argument(
        "--modulated",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="DCNv2 layers with a learned mask (default), or DCNv1 with --no-modulated",
    )
    parser.add_argument(
        "--deformable-layers",
        type=int,
        choices=range(1, BODY_DEPTH + 1),
        default=BODY_DEPTH,
        help=f"how many of the last body convolutions deform (default: all {BODY_DEPTH})",
    )
    parser.add_argument(
        "--offset-lr-scale",
        type=_non_negative_float,
        default=TrainConfig().offset_lr_scale,
        help="learning rate of the offset convolutions relative to the others (default %(default)g)",
    )
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="report folder (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a small run (under a minute) for tests and a first look")
    parser.add_argument("--threads", type=_positive, default=None, help="CPU threads (default: PyTorch's choice)")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where to train; auto picks cuda when available (default %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    from deformconv.demo.experiment import ExperimentConfig, run_experiment
    from deformconv.demo.train import ProgressBar

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        print("deformconv demo: --device cuda was asked for, but CUDA is not available", file=sys.stderr)
        return 2
    quick = QUICK if args.quick else {}
    epochs = args.epochs or quick.get("epochs", DEFAULT_EPOCHS)
    seeds = args.seeds or quick.get("seeds", DEFAULT_SEEDS)
    layers = args.deformable_layers
    base = ExperimentConfig()
    config = ExperimentConfig(
        seeds=tuple(range(seeds)),
        train=TrainConfig(epochs=epochs, offset_lr_scale=args.offset_lr_scale),
        deformable_layers=layers,
        modulated=args.modulated,
        train_digits=quick.get("train_digits"),
        test_digits=quick.get("test_digits"),
        test_copies=quick.get("test_copies", base.test_copies),
        spread_images=quick.get("spread_images", base.spread_images),
        device=device,
    )
    environment = _environment(device)
    kind = "DCNv2" if config.modulated else "DCNv1"
    print(
        f"deformconv demo: plain vs deformable ({kind}, last {layers} of {config.depth} body convs), "
        f"{len(config.seeds)} seeds x {epochs} epochs, backend {environment['backend']} on {device}, "
        f"{environment['threads']} threads"
    )
    results = run_experiment(config, ProgressBar())
    _write_report(results, environment, args.out)
    if args.quick:
        print("(--quick is a short run with fewer epochs, seeds and test images: run without it for real numbers)")
    return 0


def _environment(device: str) -> dict[str, object]:
    import deformconv
    from deformconv.backends import select

    return {
        "deformconv": deformconv.__version__,
        "torch": torch.__version__,
        "backend": select("deform_conv2d", device).backend,
        "device": device,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.system()} {platform.machine()}",
        "date": time.strftime("%Y-%m-%d"),
    }


def _write_report(results: Results, environment: dict[str, object], out: Path) -> None:
    from deformconv.demo import figures, report, sampling
    from deformconv.demo.model import BODY_STRIDE

    out.mkdir(parents=True, exist_ok=True)
    files = {"sampling": "sampling.png", "curves": "training_curves.png"}
    examples = sampling.examples(results.models["deformable"], results.test_sets, BODY_STRIDE)
    figures.plot_sampling(examples, out / files["sampling"])
    figures.plot_curves(
        {model: [run.history for run in runs] for model, runs in results.runs.items()}, out / files["curves"]
    )
    report.write_page(results, files, environment, out / "index.md")
    report.write_json(report.to_json(results, {"environment": environment, "figures": files}), out / "results.json")
    print()
    print(report.format_text(report.table_rows(results)))
    print()
    print(report.format_text(report.spread_rows(results)))
    print(f"\nReport: {out / 'index.md'} (figures {', '.join(files.values())}; data results.json)")
