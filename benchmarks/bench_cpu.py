"""Times deformconv's kernels against F.conv2d: the same as ``deformconv bench``.

Usage:
    python benchmarks/bench_cpu.py [--shapes r50-c3,dw] [--threads 2] [--dtype float32]
                                   [--device cpu|cuda] [--json results.json]
"""

import argparse
import sys

from deformconv import bench

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench.add_arguments(parser)
    sys.exit(bench.run(parser.parse_args()))
