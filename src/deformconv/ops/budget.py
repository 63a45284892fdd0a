"""The memory budget of the sampled (im2col) buffer, and the batch chunk it implies.

Kernels that sample into a column buffer process the batch in chunks of ``batch_chunk``
images, so the buffer stays under the budget whatever the batch size. The batch does not
need to be divisible by the chunk: the last chunk is simply smaller.

The default budget is 64 MiB; set it with :func:`set_im2col_budget`, the
:func:`im2col_budget` context manager, or the environment variable
``DEFORMCONV_IM2COL_BUDGET_MB`` (read at import).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

_MIB = 1 << 20
_budget_bytes = int(float(os.environ.get("DEFORMCONV_IM2COL_BUDGET_MB", "64")) * _MIB)


def get_im2col_budget() -> int:
    """The column-buffer budget in bytes."""
    return _budget_bytes


def set_im2col_budget(num_bytes: int) -> None:
    """Sets the column-buffer budget in bytes (at least one image is always processed).

    Raises:
        ValueError: ``num_bytes`` is not a positive int.
    """
    global _budget_bytes
    if isinstance(num_bytes, bool) or not isinstance(num_bytes, int) or num_bytes < 1:
        raise ValueError(f"num_bytes must be a positive int, got {num_bytes!r}")
    _budget_bytes = num_bytes


@contextlib.contextmanager
def im2col_budget(num_bytes: int) -> Iterator[None]:
    """Context manager that sets the column-buffer budget and restores it on exit.

    Example:
        >>> with deformconv.im2col_budget(16 << 20):
        ...     y = deformconv.deform_conv2d(x, offset, weight)
    """
    previous = get_im2col_budget()
    set_im2col_budget(num_bytes)
    try:
        yield
    finally:
        set_im2col_budget(previous)


def batch_chunk(column_elements_per_image: int, bytes_per_element: int) -> int:
    """How many images fit in one column buffer under the budget (at least 1)."""
    per_image = max(1, column_elements_per_image * bytes_per_element)
    return max(1, _budget_bytes // per_image)
