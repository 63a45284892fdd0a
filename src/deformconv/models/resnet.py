"""ResNet-18..152 with deformable 3x3 convolutions in chosen stages.

Module names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv2``, ``layer1.0.downsample.0``,
``fc``, ...), so a torchvision ResNet state dict loads into any variant and leaves only the
``conv_offset`` weights of the deformable layers missing (see
:func:`deformconv.models.load_torchvision_weights`). A deformable layer keeps the name and the
``weight`` of the convolution it replaces; its offset convolution is ``<name>.conv_offset``, as
in mmdetection's DCN backbones.

In a bottleneck the middle 3x3 convolution becomes deformable, in a basic block the first 3x3
(each with the block's stride), as in the DCN papers. For detection, the model returns the
feature maps of chosen stages (C2..C5) and supports mmdetection's ``frozen_stages`` and
``norm_eval``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from deformconv.nn.pack import DeformConv2dPack, DeformConvPackBase, MaskActivation, ModulatedDeformConv2dPack

NormLayer = Callable[[int], nn.Module]
StageSpec = bool | int

STAGE_NAMES = ("layer1", "layer2", "layer3", "layer4")


@dataclass(frozen=True)
class DeformOptions:
    """How the deformable 3x3 convolutions of a ResNet are built.

    Attributes:
        modulated: DCNv2 (:class:`~deformconv.nn.ModulatedDeformConv2dPack`) if True, DCNv1
            (:class:`~deformconv.nn.DeformConv2dPack`) if False.
        offset_groups: offset (deformable) groups of each layer.
        mask_activation: DCNv2 mask activation (see :class:`~deformconv.nn.ModulatedDeformConv2dPack`).
    """

    modulated: bool = True
    offset_groups: int = 1
    mask_activation: MaskActivation = "2sigmoid"

    def conv3x3(self, in_planes: int, out_planes: int, stride: int, groups: int, dilation: int) -> nn.Module:
        """A deformable 3x3 convolution without bias, padded like torchvision's ``conv3x3``."""
        layer_type = ModulatedDeformConv2dPack if self.modulated else DeformConv2dPack
        options = {"mask_activation": self.mask_activation} if self.modulated else {}
        return layer_type(
            in_planes,
            out_planes,
            3,
            stride,
            dilation,
            dilation,
            groups,
            self.offset_groups,
            bias=False,
            **options,
        )


def conv3x3(
    in_planes: int,
    out_planes: int,
    stride: int = 1,
    groups: int = 1,
    dilation: int = 1,
    deform: DeformOptions | None = None,
) -> nn.Module:
    """3x3 convolution with padding, deformable when ``deform`` is given."""
    if deform is not None:
        return deform.conv3x3(in_planes, out_planes, stride, groups, dilation)
    return nn.Conv2d(in_planes, out_planes, 3, stride, padding=dilation, groups=groups, bias=False, dilation=dilation)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection; the first one is deformable when asked.

    Args:
        inplanes: input channels.
        planes: output channels.
        stride: stride of the first convolution.
        downsample: maps the input to the output's shape for the residual, or None.
        groups, base_width: must be 1 and 64 (as in torchvision).
        dilation: must be 1 (as in torchvision).
        norm_layer: normalisation after each convolution. Default: ``nn.BatchNorm2d``.
        deform: makes ``conv1`` deformable when given.
    """

    expansion: int = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: NormLayer | None = None,
        deform: DeformOptions | None = None,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError(f"BasicBlock only supports groups=1 and base_width=64, got {groups}, {base_width}")
        if dilation != 1:
            raise ValueError(f"BasicBlock only supports dilation=1, got {dilation}")
        norm_layer = norm_layer or nn.BatchNorm2d
        self.conv1 = conv3x3(inplanes, planes, stride, deform=deform)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        """x (Tensor[N, inplanes, H, W]) -> Tensor[N, planes, H/stride, W/stride]."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1, 3x3 (strided, deformable when asked), 1x1 convolutions with a residual connection.

    Args:
        inplanes: input channels.
        planes: output channels / ``expansion``.
        stride: stride of the 3x3 convolution (torchvision's "ResNet v1.5").
        downsample: maps the input to the output's shape for the residual, or None.
        groups: groups of the 3x3 convolution (ResNeXt).
        base_width: width per group; the 3x3 has ``planes * base_width / 64 * groups`` channels.
        dilation: dilation of the 3x3 convolution.
        norm_layer: normalisation after each convolution. Default: ``nn.BatchNorm2d``.
        deform: makes ``conv2`` deformable when given.
    """

    expansion: int = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: NormLayer | None = None,
        deform: DeformOptions | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride, groups, dilation, deform=deform)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        """x (Tensor[N, inplanes, H, W]) -> Tensor[N, planes*4, H/stride, W/stride]."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


Block = type[BasicBlock | Bottleneck]


def _deformable_blocks(spec: StageSpec, blocks: int, stage: int) -> int:
    """How many of a stage's last blocks are deformable, from its ``deform_stages`` entry."""
    if isinstance(spec, bool):
        return blocks if spec else 0
    if isinstance(spec, int) and 0 <= spec <= blocks:
        return spec
    raise ValueError(
        f"deform_stages[{stage}] (layer{stage + 1}, {blocks} blocks) must be False, True or an int "
        f"in [0, {blocks}], got {spec!r}"
    )


class ResNet(nn.Module):
    """ResNet with torchvision's module names and optional deformable 3x3 convolutions.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: number of blocks in each of the four stages (layer1..layer4).
        num_classes: outputs of the classification head (used when ``out_indices`` is None).
        deform_stages: one entry per stage: False (no deformable block), True (every block)
            or an int n (the last n blocks). E.g. ``(False, True, True, True)`` as in
            mmdetection's DCN configs, ``(0, 0, 0, 3)`` for the three stage-5 blocks of
            ResNet-101 in the DCN paper.
        modulated: DCNv2 if True, DCNv1 if False.
        offset_groups: offset (deformable) groups of each deformable layer.
        mask_activation: DCNv2 mask activation; the default ``"2sigmoid"`` makes every
            deformable layer start equal to the convolution it replaces.
        out_indices: None for classification (``forward`` returns logits); otherwise the
            stages whose feature maps ``forward`` returns, as a tuple: 0..3 for C2..C5
            (strides 4, 8, 16, 32). The classification head is then not built; every stage
            still runs (as in mmdetection), so all parameters take part in training.
        frozen_stages: -1 freezes nothing; 0 freezes the stem (``conv1``, ``bn1``); k >= 1
            also freezes layer1..layer{k}. Frozen parameters do not require gradients and
            frozen modules stay in eval mode.
        norm_eval: keep every BatchNorm in eval mode (running statistics frozen) even in
            ``train()``, as detection backbones do with small batches.
        zero_init_residual: zero the last BatchNorm's weight of every block (torchvision's option).
        groups: groups of the bottleneck 3x3 convolutions (ResNeXt).
        width_per_group: width of each group in the bottleneck 3x3 convolutions.
        replace_stride_with_dilation: for layer2..layer4, whether to replace the stage's stride
            2 with dilation 2 (output stride 16 or 8, as in torchvision; bottlenecks only).
        norm_layer: normalisation layer. Default: ``nn.BatchNorm2d``.

    Example:
        >>> model = ResNet(Bottleneck, [3, 4, 6, 3], deform_stages=(False, True, True, True),
        ...                out_indices=(1, 2, 3))
        >>> [f.shape[1] for f in model(torch.randn(1, 3, 64, 64))]
        [512, 1024, 2048]
    """

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        num_classes: int = 1000,
        deform_stages: Sequence[StageSpec] = (False, False, False, False),
        modulated: bool = True,
        offset_groups: int = 1,
        mask_activation: MaskActivation = "2sigmoid",
        out_indices: Sequence[int] | None = None,
        frozen_stages: int = -1,
        norm_eval: bool = False,
        zero_init_residual: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        replace_stride_with_dilation: Sequence[bool] = (False, False, False),
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"layers must have 4 entries (blocks per stage), got {list(layers)}")
        if len(replace_stride_with_dilation) != 3:
            raise ValueError(
                "replace_stride_with_dilation must have 3 entries (layer2..layer4), got "
                f"{list(replace_stride_with_dilation)}"
            )
        if len(deform_stages) != 4:
            raise ValueError(
                f"deform_stages must have 4 entries (layer1..layer4), got {len(deform_stages)}: {list(deform_stages)}"
            )
        if out_indices is not None:
            out_indices = tuple(out_indices)
            if not out_indices or any(not isinstance(i, int) or not 0 <= i <= 3 for i in out_indices):
                raise ValueError(f"out_indices must be a non-empty sequence of ints in [0, 3], got {out_indices}")
        if isinstance(frozen_stages, bool) or not isinstance(frozen_stages, int) or not -1 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be an int in [-1, 4], got {frozen_stages!r}")
        deform = DeformOptions(modulated, offset_groups, mask_activation)
        self._norm_layer = norm_layer or nn.BatchNorm2d
        self.inplanes = 64
        self.dilation = 1
        self.groups = groups
        self.base_width = width_per_group
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = self._norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            deformable = _deformable_blocks(deform_stages[stage], blocks, stage)
            dilate = stage > 0 and bool(replace_stride_with_dilation[stage - 1])
            layer = self._make_layer(block, planes, blocks, 1 if stage == 0 else 2, dilate, deform, deformable)
            self.add_module(STAGE_NAMES[stage], layer)
        if out_indices is None:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512 * block.expansion, num_classes)

        self._init_weights(zero_init_residual)
        self._freeze_stages()

    def _make_layer(
        self,
        block: Block,
        planes: int,
        blocks: int,
        stride: int,
        dilate: bool,
        deform: DeformOptions,
        deformable: int,
    ) -> nn.Sequential:
        """One stage: ``blocks`` blocks, the last ``deformable`` of them with a deformable 3x3."""
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                self._norm_layer(planes * block.expansion),
            )
        layers = []
        for index in range(blocks):
            layers.append(
                block(
                    self.inplanes,
                    planes,
                    stride if index == 0 else 1,
                    downsample if index == 0 else None,
                    self.groups,
                    self.base_width,
                    previous_dilation if index == 0 else self.dilation,
                    self._norm_layer,
                    deform if index >= blocks - deformable else None,
                )
            )
            self.inplanes = planes * block.expansion
        return nn.Sequential(*layers)

    def _init_weights(self, zero_init_residual: bool) -> None:
        """torchvision's initialisation; offset convolutions start at zero."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, DeformConvPackBase)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)
        # The loop above also reached each conv_offset (an nn.Conv2d): put it back to zero.
        for module in self.modules():
            if isinstance(module, DeformConvPackBase):
                module.reset_offset()
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, Bottleneck):
                    nn.init.constant_(module.bn3.weight, 0)
                elif isinstance(module, BasicBlock):
                    nn.init.constant_(module.bn2.weight, 0)

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        return [self.conv1, self.bn1] + [getattr(self, STAGE_NAMES[i]) for i in range(self.frozen_stages)]

    def _freeze_stages(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad_(False)

    def train(self, mode: bool = True) -> ResNet:
        """Sets training mode, keeping frozen stages (and, with ``norm_eval``, every BatchNorm) in eval mode."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        """Classification logits, or the chosen stages' feature maps.

        Args:
            x (Tensor[N, 3, H, W]): images.

        Returns:
            Tensor[N, num_classes] when ``out_indices`` is None; otherwise a tuple with, for
            each index i of ``out_indices``, Tensor[N, C_i, H/2^(i+2), W/2^(i+2)] (C2..C5;
            a stage whose stride is replaced by dilation keeps its input's size).
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        features = []
        for name in STAGE_NAMES:
            x = getattr(self, name)(x)
            features.append(x)
        if self.out_indices is not None:
            return tuple(features[i] for i in self.out_indices)
        return self.fc(self.avgpool(x).flatten(1))


def resnet18(**kwargs) -> ResNet:
    """ResNet-18 (basic blocks 2-2-2-2); keyword arguments as :class:`ResNet`."""
    return ResNet(BasicBlock, [2, 2, 2, 2], **kwargs)


def resnet34(**kwargs) -> ResNet:
    """ResNet-34 (basic blocks 3-4-6-3); keyword arguments as :class:`ResNet`."""
    return ResNet(BasicBlock, [3, 4, 6, 3], **kwargs)


def resnet50(**kwargs) -> ResNet:
    """ResNet-50 (bottlenecks 3-4-6-3); keyword arguments as :class:`ResNet`."""
    return ResNet(Bottleneck, [3, 4, 6, 3], **kwargs)


def resnet101(**kwargs) -> ResNet:
    """ResNet-101 (bottlenecks 3-4-23-3); keyword arguments as :class:`ResNet`."""
    return ResNet(Bottleneck, [3, 4, 23, 3], **kwargs)


def resnet152(**kwargs) -> ResNet:
    """ResNet-152 (bottlenecks 3-8-36-3); keyword arguments as :class:`ResNet`."""
    return ResNet(Bottleneck, [3, 8, 36, 3], **kwargs)
