"""The ``deformconv`` command line: ``demo``, ``bench``, ``info`` and ``check``.

Each sub-command lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int``; it is imported only when that sub-command runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "demo": ("deformconv.demo.command", "train a plain and a deformable network side by side"),
    "bench": ("deformconv.bench", "time the kernels against F.conv2d and the reference"),
    "info": ("deformconv.info", "show the versions and which backend runs on which device"),
    "check": ("deformconv.check", "compare every available backend with the reference"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deformconv", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(module=module)
        importlib.import_module(module).add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return importlib.import_module(args.module).run(args)


if __name__ == "__main__":
    sys.exit(main())
