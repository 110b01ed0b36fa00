"""The ~30k-parameter CNN of IMET (the default backbone)."""

from torch import nn

from focustune.models.base import register_model


@register_model("small_cnn")
def small_cnn(channels: int, image_size: int) -> tuple[nn.Module, int]:
    """Two conv blocks, dropout, one dense layer."""
    net = nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.25),
        nn.Linear(256, 32), nn.ReLU(inplace=True),
    )
    return net, 32
