"""Validation helpers shared by every operator's ``checks.py``.

Each operator validates its own arguments once, in its op body (and its fake kernel, so that
``torch.compile`` checks too); these helpers keep the messages uniform: the argument's name, the
expected layout, dtype or value, and what was given.
"""

from __future__ import annotations

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def require(condition: object, error: type[Exception], message: str) -> None:
    """Raises ``error(message)`` unless ``condition`` holds.

    ``torch._check_with`` also accepts symbolic conditions, so the same checks run in an op's
    fake kernel while ``torch.compile`` traces with dynamic shapes (they become guards there).
    A plain ``True`` returns at once: an op validates about ten conditions per call, and
    ``torch._check_with`` costs about a microsecond each.
    """
    if condition is True:
        return
    torch._check_with(error, condition, lambda: message)


def check_tensor(tensor: object, name: str, ndim: int, layout: str) -> Tensor:
    """Checks that ``tensor`` is a Tensor of rank ``ndim``; ``layout`` (e.g. ``"[N, C, H, W]"``) names its axes."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a Tensor{layout}, got {type(tensor).__name__}")
    if tensor.dim() != ndim:
        raise ValueError(f"{name} must be a {ndim}-d Tensor{layout}, got shape {tuple(tensor.shape)}")
    return tensor


def check_types(layouts: dict[str, str], **tensors: object) -> None:
    """Raises TypeError naming the first argument that is neither a Tensor nor None.

    A public function calls this before its op: the dispatcher would otherwise reject a
    non-tensor with a message about the op's schema rather than the argument.
    """
    for name, tensor in tensors.items():
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"{name} must be a Tensor{layouts[name]}, got {type(tensor).__name__}")


def check_grad_output(grad_output: object, like: Tensor, expected: tuple, layout: str) -> None:
    """Checks a backward op's ``grad_output``: a Tensor of ``like``'s dtype with the forward output's shape.

    Args:
        grad_output: what the backward op was given.
        like: the forward's input whose dtype the output has.
        expected: the forward output's shape; ``layout`` names its axes (e.g. ``"[N, C_out, H_out, W_out]"``).
    """
    if not isinstance(grad_output, Tensor) or grad_output.dtype != like.dtype:
        given = grad_output.dtype if isinstance(grad_output, Tensor) else type(grad_output).__name__
        raise TypeError(f"grad_output must be a Tensor of dtype {like.dtype}, got {given}")
    require(
        tuple(grad_output.shape) == tuple(expected),
        ValueError,
        f"grad_output must have shape {layout} = {list(expected)}, got {list(grad_output.shape)}",
    )
