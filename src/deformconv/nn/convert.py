"""Turning the ordinary convolutions of any model into deformable ones."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from torch import nn

from deformconv.nn.pack import DeformConv2dPack, DeformConvPackBase, ModulatedDeformConv2dPack

ConvSelector = Callable[[str, nn.Conv2d], bool]


def is_3x3(name: str, conv: nn.Conv2d) -> bool:
    """The default selector of :func:`convert_to_deformable`: every zero-padded 3x3 convolution."""
    return tuple(conv.kernel_size) == (3, 3) and conv.padding_mode == "zeros"


def _convolutions(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module | None, str, nn.Conv2d]]:
    """Yields ``(name, parent, attribute, conv)`` for every ``nn.Conv2d`` under ``module``.

    Shared modules are yielded once per name, so every reference gets replaced. The offset
    convolutions inside deformable layers are not yielded: they are not the model's own.
    """
    # Not named_children(): it yields a module shared by two attributes only once.
    for attribute, child in module._modules.items():
        name = f"{prefix}{attribute}"
        if child is None or isinstance(child, DeformConvPackBase):
            continue
        if isinstance(child, nn.Conv2d):
            yield name, module, attribute, child
        else:
            yield from _convolutions(child, f"{name}.")


def convert_to_deformable(
    model: nn.Module,
    select: ConvSelector | str | Iterable[str] | None = None,
    *,
    modulated: bool = True,
    offset_groups: int = 1,
) -> nn.Module:
    """Replaces chosen ``nn.Conv2d`` layers of ``model`` (in place) with deformable ones.

    Each new layer is built by :meth:`~deformconv.nn.DeformConvPackBase.from_conv`: it keeps
    the convolution's hyper-parameters, weight and bias, and its ``conv_offset`` starts at
    zero, so the converted model computes exactly what it computed before until the offsets
    learn. A convolution used at several places in the model becomes one deformable layer
    used at the same places.

    Args:
        model: any module; a bare ``nn.Conv2d`` is converted and returned.
        select: which convolutions to convert: a predicate ``select(name, conv) -> bool``, or
            module names (as in ``model.named_modules()``). Default: every zero-padded
            3x3 convolution (:func:`is_3x3`).
        modulated: DCNv2 (:class:`~deformconv.nn.ModulatedDeformConv2dPack`) if True, DCNv1
            (:class:`~deformconv.nn.DeformConv2dPack`) if False.
        offset_groups: offset (deformable) groups of every new layer.

    Returns:
        ``model``, with the chosen convolutions replaced (or the new layer if ``model`` is a
        bare convolution).

    Raises:
        ValueError: a name in ``select`` is not an ``nn.Conv2d`` of ``model``, or a chosen
            convolution cannot be made deformable (non-zero padding mode, asymmetric padding,
            channels not divisible by ``offset_groups``).

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1))
        >>> convert_to_deformable(model)
        Sequential(
          (0): ModulatedDeformConv2dPack(
            3, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)
            (conv_offset): Conv2d(3, 27, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
          )
          (1): ReLU()
          (2): Conv2d(8, 8, kernel_size=(1, 1), stride=(1, 1))
        )
    """
    layer_type = ModulatedDeformConv2dPack if modulated else DeformConv2dPack
    if isinstance(model, nn.Conv2d):
        found = [("", None, "", model)]
    else:
        found = list(_convolutions(model))
    if select is None:
        select = is_3x3
    if not callable(select):
        names = [select] if isinstance(select, str) else list(select)
        known = {name for name, *_ in found}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(
                f"select names modules that are not nn.Conv2d layers of the model: {unknown} "
                f"(its convolutions are: {sorted(known)})"
            )
        chosen = set(names)
        select = lambda name, conv: name in chosen  # noqa: E731

    replacements: dict[int, DeformConvPackBase] = {}
    for name, parent, attribute, conv in found:
        if not select(name, conv):
            continue
        if id(conv) not in replacements:
            try:
                replacements[id(conv)] = layer_type.from_conv(conv, offset_groups)
            except ValueError as error:
                raise ValueError(f"cannot make {name!r} deformable: {error}") from error
        if parent is None:
            return replacements[id(conv)]
        setattr(parent, attribute, replacements[id(conv)])
    return model
