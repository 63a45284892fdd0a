"""Deployment: ONNX export of models with deformable convolutions.

Needs the optional dependencies ``onnx`` and ``onnxscript`` (``pip install "deformconv[onnx]"``;
``onnxruntime`` to run the exported models). ``torch.export.export`` needs nothing from here:
the op's fake kernel is enough.
"""

from deformconv.export.onnx_deformconv import deform_conv2d_to_deformconv
from deformconv.export.onnx_export import export_onnx, onnx_translation_table
from deformconv.export.onnx_gridsample import deform_conv2d_to_gridsample

__all__ = [
    "deform_conv2d_to_deformconv",
    "deform_conv2d_to_gridsample",
    "export_onnx",
    "onnx_translation_table",
]
