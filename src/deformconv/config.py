"""Every run-time setting of deformconv, and every environment variable it reads, in one place.

A :class:`Setting` has a process-wide default (set at import from the environment, or by a
``set_*`` function) and a context-local override (a ``with`` block): an override made in one
thread or asyncio task is invisible to the others, so two threads can use different backends
or budgets at the same time.

Environment variables (read once, at import):

- ``DEFORMCONV_BACKEND``: force a backend by name (see :func:`deformconv.set_backend`).
- ``DEFORMCONV_IM2COL_BUDGET_MB``: the column-buffer budget in MiB (default 64).
- ``DEFORMCONV_TRITON_FORWARD``: ``implicit`` (default) or ``columns``, the Triton forward strategy.
- ``DEFORMCONV_NO_EXT=1``: do not load the C++ extension (and do not warn that it is missing).
- ``TRITON_INTERPRET=1``: Triton's CPU interpreter (read by Triton; the launchers adapt to it).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Generic, TypeVar

T = TypeVar("T")

ENVIRONMENT_VARIABLES = (
    "DEFORMCONV_BACKEND",
    "DEFORMCONV_IM2COL_BUDGET_MB",
    "DEFORMCONV_TRITON_FORWARD",
    "DEFORMCONV_NO_EXT",
    "TRITON_INTERPRET",
)


class Setting(Generic[T]):
    """A value with a process-wide default and context-local overrides.

    Args:
        name: what the value is, for error messages.
        default: the initial process-wide value.
        validate: returns the value to store, or raises ``ValueError`` naming what was given.
    """

    def __init__(self, name: str, default: T, validate: Callable[[T], T]) -> None:
        self._validate = validate
        self._default = validate(default)
        self._override: ContextVar[T] = ContextVar(f"deformconv.{name}")

    def get(self) -> T:
        """The override of the current context, else the process-wide default."""
        return self._override.get(self._default)

    def set_default(self, value: T) -> None:
        """Sets the process-wide default (seen by every thread without an override)."""
        self._default = self._validate(value)

    @contextlib.contextmanager
    def override(self, value: T) -> Iterator[None]:
        """Uses ``value`` in the current context (thread or task) inside the ``with`` block."""
        token = self._override.set(self._validate(value))
        try:
            yield
        finally:
            self._override.reset(token)


def environment_flag(name: str) -> bool:
    """True when the environment variable ``name`` is set to ``1``."""
    return os.environ.get(name, "0") == "1"


def environment_value(name: str) -> str | None:
    """The environment variable ``name``, or None when unset or empty."""
    return os.environ.get(name) or None


def _budget_from_environment() -> int:
    text = environment_value("DEFORMCONV_IM2COL_BUDGET_MB")
    if text is None:
        return 64 << 20
    try:
        megabytes = float(text)
    except ValueError:
        raise ValueError(f"DEFORMCONV_IM2COL_BUDGET_MB must be a positive number of MiB, got {text!r}") from None
    if not megabytes > 0:
        raise ValueError(f"DEFORMCONV_IM2COL_BUDGET_MB must be a positive number of MiB, got {text!r}")
    return max(1, int(megabytes * (1 << 20)))


def _positive_bytes(num_bytes: int) -> int:
    if isinstance(num_bytes, bool) or not isinstance(num_bytes, int) or num_bytes < 1:
        raise ValueError(f"num_bytes must be a positive int, got {num_bytes!r}")
    return num_bytes


#: Bytes the sampled (im2col) buffer of one kernel call may take.
im2col_budget = Setting("im2col_budget", _budget_from_environment(), _positive_bytes)
