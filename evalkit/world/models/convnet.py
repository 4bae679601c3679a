"""The world CLIP's image tower: a small CNN with mean + max pooling, registered as a timm model.

open_clip builds timm models by name (``vision_cfg.timm_model_name``), so registering this network
with timm lets ``open_clip.create_model_and_transforms`` build the whole CLIP from a JSON config.
Why a CNN: a conv feature at an object's location sees its colour, outline and pattern together,
so binding an attribute to an object is local; pooling by mean *and* max keeps both "how much"
and "whether anywhere" (a translation-invariant head; a flattening head learns binding far slower).

``evalkit_world_cnn_xy`` (the world CLIP's tower) adds two coordinate channels (x and y in [-1, 1]) to
the input of every block, CoordConv-style: a feature can then say "red, and on the left", so the pooled
embedding keeps where things are relative to each other, which spatial captions bind (the plain tower's
embedding of a scene and of the same scene with two objects' places exchanged have cosine 0.985).
"""

from __future__ import annotations

import torch
from torch import nn

MODEL_NAME = "evalkit_world_cnn"
XY_MODEL_NAME = "evalkit_world_cnn_xy"


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.GroupNorm(8, c_out), nn.GELU())


class _WithCoords(nn.Module):
    """A block fed its input plus two channels holding each location's x and y in [-1, 1]."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(n, 1, h, w)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(n, 1, h, w)
        return self.block(torch.cat([x, xs, ys], dim=1))


class WorldConvNet(nn.Module):
    def __init__(self, widths=(32, 64, 128), num_classes: int = 0, coords: bool = False, **_):
        super().__init__()
        w1, w2, w3 = widths
        extra = 2 if coords else 0
        blocks = [
            _block(3 + extra, w1, 1),  # 32×32
            _block(w1 + extra, w2, 2),
            _block(w2 + extra, w2, 1),  # 16×16
            _block(w2 + extra, w3, 2),
            _block(w3 + extra, w3, 1),  # 8×8
        ]
        self.features = nn.Sequential(*(_WithCoords(b) for b in blocks) if coords else blocks)
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

    for name, coords in ((MODEL_NAME, False), (XY_MODEL_NAME, True)):
        if is_model(name):
            continue

        def factory(pretrained: bool = False, _coords: bool = coords, **kwargs):
            kwargs = {k: v for k, v in kwargs.items() if k in ("num_classes", "widths")}
            return WorldConvNet(coords=_coords, **kwargs)

        factory.__name__ = factory.__qualname__ = name
        factory.__module__ = __name__
        register_model(factory)
