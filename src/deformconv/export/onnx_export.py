"""ONNX export of models that contain deformable convolutions.

``torch.onnx.export(..., dynamo=True)`` captures the model with ``torch.export`` (the op has a
fake kernel, so it stays one node) and translates each node to ONNX. For the
``deformconv::deform_conv2d`` node it needs a translation function from
:func:`onnx_translation_table`; :func:`export_onnx` passes that table for you.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import torch

from deformconv.export.onnx_dcn import dcn_translations
from deformconv.export.onnx_deformconv import deform_conv2d_to_deformconv
from deformconv.export.onnx_gridsample import deform_conv2d_to_gridsample
from deformconv.export.onnx_msda import MSDA_TRANSLATION

DEFORMCONV_MIN_OPSET = 19
GRIDSAMPLE_MIN_OPSET = 16
# PyTorch's own default from 2.9 on; set here so that older PyTorch (default 18) still gets
# an opset that has DeformConv.
DEFAULT_OPSET = 20


def onnx_translation_table(use_deformconv_op: bool = True) -> dict[Callable, Callable]:
    """The ``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True)``.

    Args:
        use_deformconv_op: True maps the op to the standard ``DeformConv`` operator (needs
            ``opset_version >= 19``); False to ``GridSample`` + ``MatMul`` and elementwise
            operators (``opset_version >= 16``), for runtimes without ``DeformConv``.

    Example:
        >>> torch.onnx.export(model, (x,), "model.onnx", dynamo=True,
        ...                   custom_translation_table=onnx_translation_table())
    """
    translation = deform_conv2d_to_deformconv if use_deformconv_op else deform_conv2d_to_gridsample
    return {torch.ops.deformconv.deform_conv2d.default: translation, **MSDA_TRANSLATION, **dcn_translations()}


def export_onnx(
    model: torch.nn.Module | torch.export.ExportedProgram,
    args: tuple[Any, ...],
    path: str | os.PathLike | None = None,
    *,
    use_deformconv_op: bool = True,
    opset_version: int = DEFAULT_OPSET,
    dynamic_shapes: Any | None = None,
    custom_translation_table: dict[Callable, Callable] | None = None,
    **export_kwargs: Any,
) -> torch.onnx.ONNXProgram:
    """Exports ``model`` to ONNX with the deformable convolutions translated.

    A thin wrapper of ``torch.onnx.export(..., dynamo=True)``: it adds the translation table
    and checks the opset. Put the model in eval mode first (batch norm, dropout).

    Args:
        model: the module (or an already exported program) to export.
        args: example positional inputs.
        path: where to write the ``.onnx`` file; None only returns the program.
        use_deformconv_op: see :func:`onnx_translation_table`.
        opset_version: ONNX opset: at least 19 with ``DeformConv``, 16 without.
        dynamic_shapes: as in ``torch.export.export``; the batch and spatial dimensions may be
            dynamic, channel counts must be static.
        custom_translation_table: more translations, for other custom ops of the model.
        **export_kwargs: passed on to ``torch.onnx.export`` (e.g. ``input_names``).

    Returns:
        The ``torch.onnx.ONNXProgram`` (``.model_proto`` is the ONNX model).

    Raises:
        ValueError: ``opset_version`` is too low for the chosen translation.

    Warns:
        UserWarning: the model came out at another opset than ``opset_version``. PyTorch builds
            the graph at opset 18 or later and converts it down; PyTorch 2.13 fails to convert
            ``ReduceMean`` (global average pooling) below 18 and then keeps 18.
    """
    minimum = DEFORMCONV_MIN_OPSET if use_deformconv_op else GRIDSAMPLE_MIN_OPSET
    if opset_version < minimum:
        operator = "DeformConv" if use_deformconv_op else "GridSample"
        raise ValueError(
            f"opset_version must be >= {minimum} for the {operator} translation "
            f"(use_deformconv_op={use_deformconv_op}), got {opset_version}"
        )
    table = {**onnx_translation_table(use_deformconv_op), **(custom_translation_table or {})}
    program = torch.onnx.export(
        model,
        args,
        dynamo=True,
        opset_version=opset_version,
        dynamic_shapes=dynamic_shapes,
        custom_translation_table=table,
        **export_kwargs,
    )
    produced = program.model.opset_imports.get("")
    if produced != opset_version:
        warnings.warn(
            f"the exported model has ONNX opset {produced}, not opset_version={opset_version}: "
            "torch.onnx could not convert it (see its log)",
            stacklevel=2,
        )
    if path is not None:
        program.save(path)
    return program
