"""The memory budget of the sampled (im2col) buffer, and the batch chunk it implies.

Kernels that sample into a column buffer process the batch in chunks of ``batch_chunk``
images, so the buffer stays under the budget whatever the batch size. The batch does not
need to be divisible by the chunk: the last chunk is simply smaller.

The default budget is 64 MiB; set it for the process with :func:`set_im2col_budget` (or the
environment variable ``DEFORMCONV_IM2COL_BUDGET_MB``), or for a block of code in the current
thread with the :func:`im2col_budget` context manager.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from deformconv import config


def get_im2col_budget() -> int:
    """The column-buffer budget in bytes, as seen by the current thread."""
    return config.im2col_budget.get()


def set_im2col_budget(num_bytes: int) -> None:
    """Sets the process-wide column-buffer budget in bytes (at least one image is always processed).

    Raises:
        ValueError: ``num_bytes`` is not a positive int.
    """
    config.im2col_budget.set_default(num_bytes)


@contextlib.contextmanager
def im2col_budget(num_bytes: int) -> Iterator[None]:
    """Context manager that sets the budget for the current thread (or task) only.

    Example:
        >>> with deformconv.im2col_budget(16 << 20):
        ...     y = deformconv.deform_conv2d(x, offset, weight)
    """
    with config.im2col_budget.override(num_bytes):
        yield


def batch_chunk(bytes_per_image: int) -> int:
    """How many images fit in one column buffer under the budget (at least 1)."""
    return max(1, get_im2col_budget() // max(1, bytes_per_image))
