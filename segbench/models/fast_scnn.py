"""Fast-SCNN (Poudel et al., 2019, arXiv 1902.04502), implemented from the paper's Table 1.

Paper: 1.11 M parameters for 19 Cityscapes classes. Where our layers differ from the paper's tables:
- The paper does not say where batch-norm and ReLU sit; we put BN + ReLU after every convolution
  except the linear 1x1 projections (MobileNetV2 style) and the classifier's final 1x1 conv.
- The pyramid pooling module follows PSPNet (bins 1, 2, 3, 6; each a 1x1 conv to in/4 channels,
  concatenated with its input and fused by a 1x1 conv to 128), which the paper cites but does not tabulate.
- The feature-fusion module's low-resolution branch is a depthwise 3x3 conv (dilation 4, as the paper's
  Table 2 has it) followed by a 1x1 conv; the high-resolution branch is a 1x1 conv. Both end without ReLU;
  the sum is followed by ReLU.
- The classifier's 1x1 conv has a bias; a dropout (0.1) precedes it as in common training setups.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segbench.models.base import InputConstraints, ModelCard, SegmentationAdapter
from segbench.models.labels import CITYSCAPES_NAMES
from segbench.models.registry import register


def conv_bn_relu(
    cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, dilation: int = 1, relu: bool = True
) -> nn.Sequential:
    padding = dilation * (kernel - 1) // 2
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, padding, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def ds_conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """Depthwise-separable conv: depthwise 3x3 then pointwise 1x1, each with BN + ReLU."""
    return nn.Sequential(conv_bn_relu(cin, cin, 3, stride, groups=cin), conv_bn_relu(cin, cout, 1))


class Bottleneck(nn.Module):
    """MobileNetV2 inverted residual: expand 1x1, depthwise 3x3, linear project 1x1."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int = 6):
        super().__init__()
        hidden = cin * expansion
        self.use_residual = stride == 1 and cin == cout
        self.block = nn.Sequential(
            conv_bn_relu(cin, hidden, 1),
            conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
            conv_bn_relu(hidden, cout, 1, relu=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


def bottleneck_stage(cin: int, cout: int, repeats: int, stride: int) -> nn.Sequential:
    blocks = [Bottleneck(cin, cout, stride)] + [Bottleneck(cout, cout, 1) for _ in range(repeats - 1)]
    return nn.Sequential(*blocks)


class PyramidPooling(nn.Module):
    def __init__(self, channels: int, out_channels: int, bins: tuple[int, ...] = (1, 2, 3, 6)):
        super().__init__()
        self.bins = bins
        self.reducers = nn.ModuleList(conv_bn_relu(channels, channels // 4, 1) for _ in bins)
        self.fuse = conv_bn_relu(channels * 2, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [
            F.interpolate(reduce(F.adaptive_avg_pool2d(x, b)), size=size, mode="bilinear", align_corners=False)
            for b, reduce in zip(self.bins, self.reducers)
        ]
        return self.fuse(torch.cat([x, *pooled], dim=1))


class FeatureFusion(nn.Module):
    def __init__(self, high_channels: int, low_channels: int, out_channels: int, scale: int = 4):
        super().__init__()
        self.scale = scale
        self.low_dw = conv_bn_relu(low_channels, low_channels, 3, groups=low_channels, dilation=scale)
        self.low_project = conv_bn_relu(low_channels, out_channels, 1, relu=False)
        self.high_project = conv_bn_relu(high_channels, out_channels, 1, relu=False)

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        low = F.interpolate(low, size=high.shape[-2:], mode="bilinear", align_corners=False)
        return F.relu(self.high_project(high) + self.low_project(self.low_dw(low)))


class FastSCNN(nn.Module):
    def __init__(self, num_classes: int = 19):
        super().__init__()
        self.learning_to_downsample = nn.Sequential(conv_bn_relu(3, 32, 3, 2), ds_conv(32, 48, 2), ds_conv(48, 64, 2))
        self.global_features = nn.Sequential(
            bottleneck_stage(64, 64, 3, 2),
            bottleneck_stage(64, 96, 3, 2),
            bottleneck_stage(96, 128, 3, 1),
            PyramidPooling(128, 128),
        )
        self.fusion = FeatureFusion(64, 128, 128)
        self.classifier = nn.Sequential(
            ds_conv(128, 128), ds_conv(128, 128), nn.Dropout(0.1), nn.Conv2d(128, num_classes, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        high = self.learning_to_downsample(x)
        low = self.global_features(high)
        logits = self.classifier(self.fusion(high, low))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class FastSCNNAdapter(SegmentationAdapter):
    # Three stride-2 stages after the 1/8 stem: inputs below 64 px collapse the 1/32 branch to nothing useful.
    constraints = InputConstraints(min_size=64)
    head_keys = ("classifier.3.weight",)

    def build_module(self) -> nn.Module:
        return FastSCNN(num_classes=self.num_classes)


register(
    ModelCard(
        name="fast-scnn",
        family="fast-scnn",
        variant="cityscapes",
        source="segbench",
        num_classes=19,
        dataset="cityscapes",
        published_params_m=1.11,
        params_source="Poudel et al. 2019, arXiv 1902.04502, introduction",
        description="Fast-SCNN, two-branch real-time network (own implementation from the paper)",
        class_names=CITYSCAPES_NAMES,
    ),
    FastSCNNAdapter,
)
