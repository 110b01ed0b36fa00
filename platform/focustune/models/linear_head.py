"""The plain linear classification head (the default)."""

from torch import nn

from focustune.models.base import register_head


@register_head("linear")
def linear_head(feature_dim: int, num_classes: int) -> nn.Module:
    return nn.Linear(feature_dim, num_classes)
