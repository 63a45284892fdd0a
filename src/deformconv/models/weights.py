"""Loading torchvision-named weights into models with deformable layers, with a report of what did not match."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deformconv.nn.pack import DeformConvPackBase


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_torchvision_weights` loaded, and what it did not.

    Attributes:
        loaded: keys of the model that got a value from the state dict.
        missing_offset_keys: ``conv_offset`` keys of the deformable layers, which plain
            checkpoints do not have (they keep their zero initialisation).
        missing_keys: every other key of the model that the state dict lacks.
        unexpected_keys: keys of the state dict that the model does not have.
    """

    loaded: tuple[str, ...]
    missing_offset_keys: tuple[str, ...]
    missing_keys: tuple[str, ...]
    unexpected_keys: tuple[str, ...]

    @property
    def complete(self) -> bool:
        """True when everything but the offset convolutions was loaded and nothing was left over."""
        return not self.missing_keys and not self.unexpected_keys

    def __str__(self) -> str:
        lines = [
            f"loaded {len(self.loaded)} tensors; {len(self.missing_offset_keys)} offset-convolution "
            "tensors kept their zero initialisation"
        ]
        if self.missing_keys:
            lines.append(f"missing: {', '.join(self.missing_keys)}")
        if self.unexpected_keys:
            lines.append(f"unexpected: {', '.join(self.unexpected_keys)}")
        return "\n".join(lines)


def offset_keys(model: nn.Module) -> set[str]:
    """State-dict keys of every ``conv_offset`` in ``model``."""
    keys = set()
    for name, module in model.named_modules():
        if isinstance(module, DeformConvPackBase):
            prefix = f"{name}.conv_offset." if name else "conv_offset."
            keys.update(prefix + key for key in module.conv_offset.state_dict())
    return keys


def load_torchvision_weights(
    model: nn.Module,
    weights: Mapping[str, Tensor] | str | os.PathLike,
    strict: bool = False,
) -> LoadReport:
    """Loads a torchvision-named state dict (e.g. a torchvision ResNet checkpoint) into ``model``.

    Works for :mod:`deformconv.models` ResNets and for models converted with
    :func:`deformconv.nn.convert_to_deformable`: a deformable layer keeps the name and weight
    of the convolution it replaced, so only its ``conv_offset`` is missing from the checkpoint.

    Args:
        model: the model to load into.
        weights: a state dict, or the path of a file saved with ``torch.save`` holding one.
        strict: raise, before loading anything, if any key other than the offset
            convolutions' is missing, or any key is unexpected. ``num_batches_tracked`` may be
            missing: ``BatchNorm`` fills it in for old checkpoints, as PyTorch does.

    Returns:
        A :class:`LoadReport`; ``print`` it for a summary.

    Raises:
        KeyError: ``strict`` is True and keys do not match (the message lists them).
        RuntimeError: a tensor's shape differs from the model's (from ``load_state_dict``).

    Example:
        >>> model = deformconv.models.resnet50(deform_stages=(False, True, True, True))
        >>> report = load_torchvision_weights(model, "resnet50-0676ba61.pth")
        >>> report.complete
        True
    """
    if isinstance(weights, (str, os.PathLike)):
        weights = torch.load(weights, map_location="cpu", weights_only=True)
    if not isinstance(weights, Mapping):
        raise TypeError(f"weights must be a state dict (a mapping of names to tensors), got {type(weights).__name__}")
    model_keys = set(model.state_dict())
    offsets = offset_keys(model)
    if strict:
        # BatchNorm fills in num_batches_tracked for checkpoints saved before it existed.
        expected = {key for key in model_keys - offsets if not key.endswith(".num_batches_tracked")}
        _raise_if_incomplete(sorted(expected - set(weights)), sorted(set(weights) - model_keys))
    result = model.load_state_dict(weights, strict=False)
    missing = set(result.missing_keys)
    report = LoadReport(
        loaded=tuple(sorted(model_keys - missing)),
        missing_offset_keys=tuple(sorted(missing & offsets)),
        missing_keys=tuple(sorted(missing - offsets)),
        unexpected_keys=tuple(sorted(result.unexpected_keys)),
    )
    if strict:
        _raise_if_incomplete(report.missing_keys, report.unexpected_keys)
    return report


def _raise_if_incomplete(missing: Sequence[str], unexpected: Sequence[str]) -> None:
    if missing or unexpected:
        raise KeyError(
            "the state dict does not match the model: "
            f"missing (besides offset convolutions): {list(missing)}; unexpected: {list(unexpected)}"
        )
