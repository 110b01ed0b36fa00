"""The CNN of the IMET paper (Singh & Guggilam, arXiv 2507.02979).

The paper gives the layers and the parameter count, not the kernel sizes or the dense width:
Input(28x28x1) -> Conv2D(32) -> MaxPool -> Conv2D(32) -> MaxPool -> Dropout(0.5) -> Flatten -> Dense
-> Output, 30,047 parameters. With Keras's defaults for what is not given (2x2 pooling, stride 1,
biases, ReLU) and kernels of 1 to 9 px, one choice of kernels and width gives exactly 30,047 on
PneumoniaMNIST, and only with the binary reading of the output (one sigmoid unit): a 7x7 and a 4x4
convolution, one of them 'same'-padded (here the first: 28 -> 28 -> pool 14 -> 11 -> pool 5), so
5x5x32 = 800 flattened features, Dense(15, ReLU) and Dense(1, sigmoid): 1,600 + 16,416 + 12,015 + 16
= 30,047. With a two-unit softmax output (the ``linear`` head) the same network has 30,063; no
two-unit reading with 2x2 pooling reaches 30,047 (the nearest natural one, 3x3 'same' kernels and
Dense(13), has 29,993).

So the paper's network is ``model=imet_cnn head=sigmoid``. Our default backbone, ``small_cnn``,
differs on purpose (3x3 kernels, 64 filters in the second convolution, an added pooling layer,
dropout 0.25).
"""

from __future__ import annotations

from torch import nn

from focustune.errors import ConfigError
from focustune.models.base import register_model

DENSE_WIDTH = 15
FILTERS = 32


def _flattened_size(image_size: int) -> int:
    """Side of the last feature map: 7x7 'same' conv, pool 2, 4x4 'valid' conv, pool 2."""
    return (image_size // 2 - 3) // 2


@register_model("imet_cnn")
def imet_cnn(channels: int, image_size: int) -> tuple[nn.Module, int]:
    """IMET's CNN up to its dense layer (15 ReLU features); the head is its output layer."""
    side = _flattened_size(image_size)
    if side < 1:
        raise ConfigError(f"imet_cnn needs images of at least 10 px, got {image_size}")
    net = nn.Sequential(
        nn.Conv2d(channels, FILTERS, 7, padding=3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(FILTERS, FILTERS, 4), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Dropout(0.5), nn.Flatten(),
        nn.Linear(FILTERS * side * side, DENSE_WIDTH), nn.ReLU(inplace=True),
    )
    return net, DENSE_WIDTH
