"""The world CLIP's image tower: a small CNN with mean + max pooling, registered as a timm model.

open_clip builds timm models by name (``vision_cfg.timm_model_name``), so registering this network
with timm lets ``open_clip.create_model_and_transforms`` build the whole CLIP from a JSON config.
Why a CNN: a conv feature at an object's location sees its colour, outline and pattern together,
so binding an attribute to an object is local; pooling by mean *and* max keeps both "how much"
and "whether anywhere" (a translation-invariant head; a flattening head learns binding far slower).
"""

from __future__ import annotations

import torch
from torch import nn

MODEL_NAME = "evalkit_world_cnn"


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.GroupNorm(8, c_out), nn.GELU())


class WorldConvNet(nn.Module):
    def __init__(self, widths=(32, 64, 128), num_classes: int = 0, **_):
        super().__init__()
        w1, w2, w3 = widths
        self.features = nn.Sequential(
            _block(3, w1, 1),  # 32×32
            _block(w1, w2, 2),
            _block(w2, w2, 1),  # 16×16
            _block(w2, w3, 2),
            _block(w3, w3, 1),  # 8×8
        )
        self.num_features = 2 * w3
        self.default_cfg = {}
        self.pretrained_cfg = {}
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def reset_classifier(self, num_classes: int = 0, global_pool=None) -> None:
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))


def register() -> None:
    from timm.models import is_model, register_model

    if not is_model(MODEL_NAME):

        def evalkit_world_cnn(pretrained: bool = False, **kwargs):
            kwargs = {k: v for k, v in kwargs.items() if k in ("num_classes", "widths")}
            return WorldConvNet(**kwargs)

        evalkit_world_cnn.__module__ = __name__
        register_model(evalkit_world_cnn)
