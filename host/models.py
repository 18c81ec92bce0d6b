"""Models for 28 x 28 single-channel images (MNIST layout).

Members
-------
LeNet
    LeNet-5-style CNN: conv5x5(1->6) - ReLU - maxpool2 - conv5x5(6->16) - ReLU - maxpool2 - fc(256->120) - ReLU -
    fc(120->84) - ReLU - fc(84->10). 44,426 parameters; 0.28 M multiply-accumulates per image in its
    convolutions and linear layers (the GEMMs a backend runs).
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

__all__ = ["LeNet", "MODELS", "INITS", "build_model"]

INITS = ("kaiming", "torch")


class LeNet(nn.Module):
    """LeNet-style CNN for 1 x 28 x 28 inputs and 10 classes (module docstring); returns logits."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
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


MODELS = {"lenet": LeNet}


def build_model(name: str, seed: int = 0, init: str = "torch") -> nn.Module:
    """A freshly initialised model ``name`` (a key of :data:`MODELS`); the initialisation (one of :data:`INITS`)
    depends only on ``seed``. Raises ValueError naming the known models or initialisations for an unknown one."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    if init not in INITS:
        raise ValueError(f"Unknown initialisation {init!r}; known: {', '.join(INITS)}")
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = MODELS[name]()
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
