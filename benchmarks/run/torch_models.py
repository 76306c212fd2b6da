"""The benchmark models as PyTorch modules, with random (seeded) weights.

Speed does not depend on the weights, so nothing is trained or downloaded: the numbers
these models produce are meaningless, their cost is what matters. torchvision is not
installed here, so the ResNets are written out by hand with the standard layer layout
(ResNet-18: BasicBlock x[2,2,2,2], 11.7 M parameters; ResNet-50: Bottleneck x[3,4,6,3],
25.6 M parameters). Each factory takes no arguments so ``rayfront export`` can name it
as ``rayfront.benchmarks.run.torch_models:<factory>``.
"""

from __future__ import annotations

import torch
from torch import nn

SEED = 0


class TinyMLP(nn.Module):
    """Three small linear layers: per-call overhead dominates, the case batching is for."""

    def __init__(self, in_features: int = 64, hidden: int = 128, classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicBlock(nn.Module):
    """ResNet-18/34 residual block: two 3x3 convolutions."""

    expansion = 1

    def __init__(self, in_ch: int, ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)
        self.relu = nn.ReLU(inplace=True)
        self.down: nn.Module = nn.Identity()
        if stride != 1 or in_ch != ch:
            self.down = nn.Sequential(
                nn.Conv2d(in_ch, ch, 1, stride, bias=False), nn.BatchNorm2d(ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.down(x))


class Bottleneck(nn.Module):
    """ResNet-50 residual block: 1x1, 3x3, 1x1 with a 4x expansion."""

    expansion = 4

    def __init__(self, in_ch: int, ch: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = ch * self.expansion
        self.conv1 = nn.Conv2d(in_ch, ch, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)
        self.conv3 = nn.Conv2d(ch, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.down: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.down = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.down(x))


class ResNet(nn.Module):
    """The ImageNet ResNet layout (stem, four stages, global pool, linear head)."""

    def __init__(
        self, block: type[BasicBlock | Bottleneck], layers: list[int], classes: int = 1000
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        stages: list[nn.Module] = []
        in_ch = 64
        for i, (ch, n) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            blocks: list[nn.Module] = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(in_ch, ch, stride))
                in_ch = ch * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def mlp() -> nn.Module:
    """Tiny MLP, input ``x`` FP32 [-1, 64], output ``logits`` [-1, 10]."""
    torch.manual_seed(SEED)
    return TinyMLP().eval()


def cnn() -> nn.Module:
    """ResNet-18-size CNN, input ``x`` FP32 [-1, 3, 224, 224], output ``logits`` [-1, 1000]."""
    torch.manual_seed(SEED)
    return ResNet(BasicBlock, [2, 2, 2, 2]).eval()


def resnet50() -> nn.Module:
    """ResNet-50-size CNN for GPU runs, same input/output as :func:`cnn`."""
    torch.manual_seed(SEED)
    return ResNet(Bottleneck, [3, 4, 6, 3]).eval()
