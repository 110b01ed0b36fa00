"""torchvision EfficientNet / MobileNet backbones for larger images, first conv adapted to the channels."""

from torch import nn

from focustune.models.base import BackboneFactory, register_model


def _compact(name: str) -> BackboneFactory:
    def build(channels: int, image_size: int) -> tuple[nn.Module, int]:
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        stem = net.features[0][0]
        net.features[0][0] = nn.Conv2d(channels, stem.out_channels, stem.kernel_size, stem.stride,
                                       stem.padding, bias=False)
        last = [m for m in net.classifier.modules() if isinstance(m, nn.Linear)]
        dim = last[0].in_features
        net.classifier = nn.Identity()
        return net, dim

    return build


for _name in ("efficientnet_b0", "mobilenet_v3_small"):
    register_model(_name)(_compact(_name))
