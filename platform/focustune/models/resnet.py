"""torchvision ResNets with the MedMNIST benchmark's 28-px stem below 64 px."""

from torch import nn

from focustune.models.base import BackboneFactory, register_model


def _resnet(name: str) -> BackboneFactory:
    def build(channels: int, image_size: int) -> tuple[nn.Module, int]:
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        small = image_size < 64
        # The MedMNIST benchmark's 28-px ResNet: 3x3 stride-1 stem, no max-pool.
        net.conv1 = nn.Conv2d(channels, 64, kernel_size=3 if small else 7, stride=1 if small else 2,
                              padding=1 if small else 3, bias=False)
        if small:
            net.maxpool = nn.Identity()
        dim = net.fc.in_features
        net.fc = nn.Identity()
        return net, dim

    return build


for _name in ("resnet18", "resnet50"):
    register_model(_name)(_resnet(_name))
