"""Test-suite configuration."""

import os

import torch

# Without a GPU the Triton kernels run in Triton's interpreter, which has to be selected before
# anything imports Triton; `make test` runs that file in a process of its own with
# TRITON_INTERPRET=1 set from the start.
collect_ignore_glob = []
if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    collect_ignore_glob.append("test_triton_*.py")
