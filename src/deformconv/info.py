"""``deformconv info``: versions, devices, which backend runs on which device, and what the
C++ extension was built against.

Example:
    $ deformconv info
    ...
       cpp_extension: stable ABI, built with torch 2.13.0, loads in torch >= 2.10
"""

from __future__ import annotations

import argparse
import json

import torch

import deformconv
from deformconv.backends import cpp


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def run(args: argparse.Namespace) -> int:
    report = {
        "deformconv": deformconv.__version__,
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "threads": torch.get_num_threads(),
        "im2col_budget_bytes": deformconv.get_im2col_budget(),
        "cpp_extension": cpp.build_info(),
        "backends": deformconv.backends(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for key, value in report.items():
        if key not in ("backends", "cpp_extension"):
            print(f"{key:>20}: {value}")
    print(f"{'cpp_extension':>20}: {describe_extension(report['cpp_extension'])}")
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


def describe_extension(build: dict[str, str] | None) -> str:
    """One line on the loaded C++ extension (``build`` as from ``cpp.build_info()``)."""
    if build is None:
        return "not loaded (see the cpp backend below)"
    return f"{build['abi']} ABI, built with torch {build['torch_build']}, loads in torch >= {build['torch_min']}"
