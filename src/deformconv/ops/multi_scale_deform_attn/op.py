"""``multi_scale_deform_attn``: its public Python face, the custom ops behind it, and their autograd.

Two operators are declared with ``torch.library.custom_op``:

- ``deformconv::multi_scale_deform_attn`` (forward) and
- ``deformconv::multi_scale_deform_attn_backward`` (gradients for value, sampling locations and
  attention weights).

As for ``deform_conv2d`` (see :mod:`deformconv.ops.deform_conv2d.op`), the op owns the contract
(:mod:`.contract`): it validates its arguments once (the fake kernel runs the shape checks while
``torch.compile`` traces; the level sizes are data and are checked when the op runs), computes
the geometry and the chunk sizes from the memory budget, runs the kernel of the backend chosen
for the value's device, and creates a fresh empty tensor for every gradient not asked for.
"""

from __future__ import annotations

import torch
from torch import Tensor

from deformconv.backends import select
from deformconv.ops import budget
from deformconv.ops.autocast import register_autocast
from deformconv.ops.multi_scale_deform_attn.checks import ARG_LAYOUTS, check_args, check_levels
from deformconv.ops.multi_scale_deform_attn.contract import BACKWARD, FORWARD, Grads, NeededGrads
from deformconv.ops.multi_scale_deform_attn.geometry import AttnGeometry
from deformconv.ops.validation import check_grad_output

# Kernels that gather hold the corners and their weighted copy at once.
_BUFFERS_PER_QUERY = 2


def _geometry(value, spatial_shapes, level_start_index, sampling_locations, attention_weights) -> AttnGeometry:
    """Validates every argument (level sizes included) and sets the chunks from the im2col budget."""
    geometry = check_args(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    geometry = check_levels(spatial_shapes, level_start_index, geometry)
    element_size = torch.finfo(geometry.accumulation_dtype).bits // 8
    rows = budget.batch_chunk(_BUFFERS_PER_QUERY * geometry.gathered_elements_per_query * element_size)
    queries = max(1, geometry.queries)
    if rows >= queries:
        return geometry.with_chunks(rows // queries, queries)
    return geometry.with_chunks(1, rows)


def _contiguous(*tensors: Tensor) -> list[Tensor]:
    return [t.contiguous() for t in tensors]


@torch.library.custom_op("deformconv::multi_scale_deform_attn", mutates_args=())
def multi_scale_deform_attn_op(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Forward op. Returns Tensor[N, Lq, M*D]."""
    geometry = _geometry(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    args = _contiguous(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    return select(FORWARD, value.device.type).fn(*args, geometry)


@multi_scale_deform_attn_op.register_fake
def _multi_scale_deform_attn_fake(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    geometry = check_args(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    return value.new_empty(geometry.batch, geometry.queries, geometry.embed_dims)


def _check_grad_output(grad_output: Tensor, geometry: AttnGeometry, value: Tensor) -> None:
    expected = (geometry.batch, geometry.queries, geometry.embed_dims)
    check_grad_output(grad_output, value, expected, "[N, Lq, M*D]")


@torch.library.custom_op("deformconv::multi_scale_deform_attn_backward", mutates_args=())
def multi_scale_deform_attn_backward_op(
    grad_output: Tensor,
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    need_value: bool,
    need_sampling_locations: bool,
    need_attention_weights: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Backward op: ``(grad_value, grad_sampling_locations, grad_attention_weights)``.

    A gradient that is not asked for is a fresh empty tensor.
    """
    geometry = _geometry(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    _check_grad_output(grad_output, geometry, value)
    needed = NeededGrads(need_value, need_sampling_locations, need_attention_weights)
    args = _contiguous(grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    grads = select(BACKWARD, value.device.type).fn(*args, geometry, needed)
    result = []
    for name, grad, want in zip(Grads._fields, grads, needed):
        if want and grad is None:
            raise RuntimeError(f"the {BACKWARD} kernel returned no gradient for {name}, which was asked for")
        result.append(grad if want else value.new_empty(0))
    return tuple(result)  # type: ignore[return-value]


@multi_scale_deform_attn_backward_op.register_fake
def _multi_scale_deform_attn_backward_fake(
    grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
    need_value, need_sampling_locations, need_attention_weights,
):  # fmt: skip
    geometry = check_args(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    _check_grad_output(grad_output, geometry, value)
    pairs = ((value, need_value), (sampling_locations, need_sampling_locations))
    pairs += ((attention_weights, need_attention_weights),)
    return tuple(tensor.new_empty(tensor.shape) if needed else value.new_empty(0) for tensor, needed in pairs)


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_output: Tensor):
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
    need_value, _, _, need_locations, need_weights = ctx.needs_input_grad
    grad_value, grad_locations, grad_weights = torch.ops.deformconv.multi_scale_deform_attn_backward(
        grad_output.contiguous(), value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
        need_value, need_locations, need_weights,
    )  # fmt: skip
    return (
        grad_value if need_value else None,
        None,
        None,
        grad_locations if need_locations else None,
        grad_weights if need_weights else None,
    )


multi_scale_deform_attn_op.register_autograd(_backward, setup_context=_setup_context)
register_autocast("multi_scale_deform_attn")


def multi_scale_deform_attn(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    r"""Multi-scale deformable attention, the sampling core of Deformable DETR.

    `Deformable DETR <https://arxiv.org/abs/2010.04159>`_ (Zhu et al., ICLR 2021), with the
    semantics of its ``MSDeformAttnFunction`` and of mmcv's ``multi_scale_deformable_attn``, so
    models and checkpoints move freely. For batch ``n``, query ``q`` and head ``m``,

    .. math::
        y[n, q, m] = \sum_{l=0}^{L-1} \sum_{p=0}^{P-1} a[n, q, m, l, p]\,
        V_l[n, m](x_{nqmlp} W_l - \tfrac12,\; y_{nqmlp} H_l - \tfrac12)

    where :math:`V_l[n, m]` is level ``l`` of ``value`` for head ``m`` seen as an
    ``H_l x W_l`` map of ``D``-vectors, read bilinearly with zeros outside (the same as
    ``F.grid_sample(V_l, 2*loc - 1, align_corners=False, padding_mode="zeros")``). Locations are
    normalised to ``[0, 1]`` in ``(x, y)`` order with ``(0, 0)`` the top-left corner of the
    map; NaN and Inf locations read 0 (and pass no gradient). The attention weights are applied
    as given (the module applies the softmax over ``L*P``).

    Kernels that gather into a buffer process the queries in chunks that keep it under
    :func:`deformconv.get_im2col_budget` bytes, whatever the batch size and the number of queries.

    Args:
        value (Tensor[N, S, M, D]): the levels, each flattened row-major and concatenated:
            ``S = sum of H_l*W_l``.
        spatial_shapes (Tensor[L, 2], int64): ``(H_l, W_l)`` of each level.
        level_start_index (Tensor[L], int64): where each level starts in ``S``
            (``[0, H_0*W_0, H_0*W_0 + H_1*W_1, ...]``).
        sampling_locations (Tensor[N, Lq, M, L, P, 2]): ``(x, y)`` in ``[0, 1]`` (values outside
            read zeros).
        attention_weights (Tensor[N, Lq, M, L, P]): weight of each sample point.

    Returns:
        Tensor[N, Lq, M*D]: channels ``m*D .. (m+1)*D`` hold head ``m``.

    Raises:
        TypeError, ValueError, RuntimeError: an argument has the wrong type, shape, dtype or
        device, or the level sizes disagree with ``value`` or ``level_start_index``; the message
        names it, with what was expected and what was given.

    Example:
        >>> shapes = torch.tensor([[8, 8], [4, 4]])
        >>> starts = torch.tensor([0, 64])
        >>> value = torch.randn(2, 80, 4, 16)
        >>> locations = torch.rand(2, 10, 4, 2, 3, 2)
        >>> weights = torch.rand(2, 10, 4, 2, 3).softmax(-1)
        >>> multi_scale_deform_attn(value, shapes, starts, locations, weights).shape
        torch.Size([2, 10, 64])
    """
    tensors = [value, spatial_shapes, level_start_index, sampling_locations, attention_weights]
    for name, tensor in zip(ARG_LAYOUTS, tensors):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{name} must be a Tensor{ARG_LAYOUTS[name]}, got {type(tensor).__name__}")
    return torch.ops.deformconv.multi_scale_deform_attn(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
