"""LeNet-5 (the backbone of LOW's and learn2mix's MNIST experiments)."""

from torch import nn

from focustune.models.base import register_model


@register_model("lenet5")
def lenet5(channels: int, image_size: int) -> tuple[nn.Module, int]:
    """LeNet-5 (ReLU, max-pooling), adaptive to the input size."""
    net = nn.Sequential(
        nn.Conv2d(channels, 6, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(5), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(inplace=True), nn.Linear(120, 84), nn.ReLU(inplace=True),
    )
    return net, 84
