"""Optimizer parameter groups that give the offset convolutions their own learning rate.

The DCN paper trains the layers that predict offsets with a scaled learning rate; mmcv calls
the factor ``dcn_offset_lr_mult``. Offsets start at zero and move the sampling points of every
output pixel, so a smaller rate keeps early training stable.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from deformconv.nn.pack import DeformConvPackBase


def offset_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of every ``conv_offset`` in ``model`` (each once)."""
    params: dict[int, nn.Parameter] = {}
    for module in model.modules():
        if isinstance(module, DeformConvPackBase):
            for param in module.conv_offset.parameters():
                params[id(param)] = param
    return list(params.values())


def offset_param_groups(
    model: nn.Module, lr: float, offset_lr_mult: float = 0.1, **options: Any
) -> list[dict[str, Any]]:
    """Parameter groups for a ``torch.optim`` optimizer: offset convolutions get ``lr * offset_lr_mult``.

    Both groups set ``lr`` explicitly, so learning-rate schedulers (which scale every group's
    initial rate) keep the ratio. A group with no parameters is left out.

    Args:
        model: a model containing deformable layers with ``conv_offset``
            (:class:`~deformconv.nn.DeformConv2dPack`, :class:`~deformconv.nn.ModulatedDeformConv2dPack`).
        lr: learning rate of every other parameter.
        offset_lr_mult: factor of the offset convolutions' learning rate. Default: 0.1.
        **options: other per-group options, added to both groups (e.g. ``weight_decay``).

    Returns:
        ``[{"params": other parameters, "lr": lr, **options},
        {"params": offset parameters, "lr": lr * offset_lr_mult, **options}]``.

    Raises:
        ValueError: ``lr`` or ``offset_lr_mult`` is negative, or ``options`` sets ``params``.

    Example:
        >>> optimizer = torch.optim.SGD(offset_param_groups(model, lr=0.02, momentum=0.9))
    """
    if lr < 0 or offset_lr_mult < 0:
        raise ValueError(f"lr and offset_lr_mult must be >= 0, got lr={lr}, offset_lr_mult={offset_lr_mult}")
    if "params" in options:
        raise ValueError("options must not set 'params': each group gets its own")
    offset = offset_parameters(model)
    offset_ids = {id(param) for param in offset}
    other = [param for param in model.parameters() if id(param) not in offset_ids]
    groups = [
        {"params": other, "lr": lr, **options},
        {"params": offset, "lr": lr * offset_lr_mult, **options},
    ]
    return [group for group in groups if group["params"]]
