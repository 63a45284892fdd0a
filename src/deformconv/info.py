"""``deformconv info``: versions, devices, and which backend runs on which device."""

from __future__ import annotations

import argparse
import json

import torch

import deformconv


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def run(args: argparse.Namespace) -> int:
    report = {
        "deformconv": deformconv.__version__,
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "threads": torch.get_num_threads(),
        "im2col_budget_bytes": deformconv.get_im2col_budget(),
        "backends": deformconv.backends(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for key, value in report.items():
        if key != "backends":
            print(f"{key:>20}: {value}")
    print("backends:")
    for name, state in report["backends"].items():
        if state["available"]:
            default = ", ".join(state["default_for"]) or "-"
            print(
                f"  {name:<10} available on {', '.join(state['devices'])}; default for: {default}; "
                f"operators: {', '.join(state['ops'])}"
            )
        else:
            print(f"  {name:<10} unavailable: {state['reason']}")
    return 0
