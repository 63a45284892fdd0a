"""``dcnv4`` (FlashInternImage's DCNv4): its public face, validation, packed layout and kernel contract.

Its geometry is DCNv3's (:mod:`deformconv.ops.dcnv3.geometry`).
"""

from deformconv.ops.dcnv4.op import dcnv4

__all__ = ["dcnv4"]
