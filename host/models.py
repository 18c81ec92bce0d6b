"""Models for small images: 28 x 28 single-channel (MNIST layout) or 32 x 32 RGB (CIFAR-10).

Members
-------
LeNet
    LeNet-5-style CNN: conv5x5(1->6) - ReLU - maxpool2 - conv5x5(6->16) - ReLU - maxpool2 - fc(256->120) - ReLU -
    fc(120->84) - ReLU - fc(84->10). 44,426 parameters; 0.28 M multiply-accumulates per image in its
    convolutions and linear layers (the GEMMs a backend runs).
ResNet20
    CIFAR-style ResNet-20 (He et al. 2016, §4.2): conv3x3(C->16) - BN - ReLU, three stages of three basic blocks
    (16, 32, 64 channels; the first block of stages 2 and 3 has stride 2), global average pooling, fc(64->10);
    shortcuts of "option A" (identity; where the shape changes, stride-2 subsampling and zero channels), so
    all 19 convolutions and the linear layer are offloaded, and nothing else. 0.27 M parameters; 40.6 M
    multiply-accumulates per 32 x 32 image (31 M at 28 x 28).
MODELS : dict
    Name to constructor, used by ``fxtrain train --model``.
INITS : tuple of str
    ``"kaiming"`` (He et al. 2015: normal weights with variance ``2 / fan_in``, the ReLU-preserving scale, zero
    biases) and ``"torch"`` (PyTorch's layer defaults, uniform with bound ``1 / sqrt(fan_in)``).
build_model
    A model by name, with a seeded initialisation.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["LeNet", "ResNet20", "MODELS", "INITS", "build_model"]

INITS = ("kaiming", "torch")


class LeNet(nn.Module):
    """LeNet-style CNN for 1 x 28 x 28 inputs and 10 classes (module docstring); returns logits."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        self.fc1 = nn.Linear(16 * 4 * 4, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = x.flatten(1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


class _BasicBlock(nn.Module):
    """conv3x3 - BN - ReLU - conv3x3 - BN, plus the option-A shortcut, then ReLU."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.stride, self.extra = stride, cout - cin

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x
        if self.stride != 1 or self.extra:
            shortcut = x[:, :, ::self.stride, ::self.stride]
            shortcut = shortcut[..., :out.shape[-2], :out.shape[-1]]
            shortcut = nn.functional.pad(shortcut, (0, 0, 0, 0, 0, self.extra))
        return self.relu(out + shortcut)


class ResNet20(nn.Module):
    """CIFAR-style ResNet-20 (module docstring) for ``in_channels`` x H x W inputs; returns logits."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        blocks, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(_BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, x):
        x = self.blocks(self.relu(self.bn1(self.conv1(x))))
        return self.fc(self.pool(x).flatten(1))


MODELS = {"lenet": LeNet, "resnet20": ResNet20}


def build_model(name: str, seed: int = 0, init: str = "torch", in_channels: int = 1) -> nn.Module:
    """A freshly initialised model ``name`` (a key of :data:`MODELS`) for ``in_channels``-channel images; the
    initialisation (one of :data:`INITS`) depends only on ``seed``. Raises ValueError naming the known models or
    initialisations for an unknown one."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    if init not in INITS:
        raise ValueError(f"Unknown initialisation {init!r}; known: {', '.join(INITS)}")
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = MODELS[name](in_channels=in_channels)
        if init == "kaiming":
            with torch.no_grad():
                for module in model.modules():
                    if isinstance(module, (nn.Conv2d, nn.Linear)):
                        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                        if module.bias is not None:
                            module.bias.zero_()
        return model
    finally:
        torch.random.set_rng_state(state)
