"""``dcnv3`` (InternImage's DCNv3): its public face, validation, geometry and kernel contract.

The geometry module also describes where DCNv4 samples: the two operators share it.
"""

from deformconv.ops.dcnv3.op import dcnv3

__all__ = ["dcnv3"]
