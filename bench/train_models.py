"""Small top-down pose networks for bench/train.py: a SimpleBaseline-like heatmap net and its
SimCC variant, on one shared backbone.

SimpleBaseline (Xiao et al. 2018) is a strided backbone followed by deconvolutions and a 1×1
convolution to K heatmaps; mmpose's SimCC-ResNet head drops the deconvolutions and maps each
keypoint's flattened final feature map to x and y bin logits with two linear layers. Both are
kept here at CPU size: a backbone of five 3×3 convolutions down to stride 8 (6 × 8 features
for a 48 × 64 input), two 4×4 deconvolutions up to stride 2 (24 × 32 heatmaps). The final
layers are initialised as mmpose initialises them (normal, std 0.001 / 0.01, zero bias).
"""
from __future__ import annotations

import torch
from torch import nn

from bench.train_data import DataConfig, K


def _conv(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def _deconv(cin, cout):
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Backbone(nn.Sequential):
    """Stride-8 features [B, 4·width, H/8, W/8]."""

    def __init__(self, width: int = 32):
        super().__init__(_conv(3, width, 2), _conv(width, 2 * width, 2),
                         _conv(2 * width, 2 * width, 1), _conv(2 * width, 4 * width, 2),
                         _conv(4 * width, 4 * width, 1))
        self.out_channels = 4 * width


class HeatmapNet(nn.Module):
    """Backbone → 2 deconvolutions → 1×1 conv: K heatmaps at stride 2."""

    mode = "heatmap"

    def __init__(self, width: int = 32, keypoints: int = K):
        super().__init__()
        self.backbone = Backbone(width)
        c = self.backbone.out_channels
        self.deconv = nn.Sequential(_deconv(c, 2 * width), _deconv(2 * width, 2 * width))
        self.final = nn.Conv2d(2 * width, keypoints, 1)
        nn.init.normal_(self.final.weight, std=0.001)
        nn.init.zeros_(self.final.bias)

    def forward(self, images):
        return self.final(self.deconv(self.backbone(images)))


class SimCCNet(nn.Module):
    """Backbone → 1×1 conv to K maps → per keypoint, flattened map → x and y bin logits."""

    mode = "simcc"

    def __init__(self, width: int = 32, keypoints: int = K, cfg: DataConfig = DataConfig()):
        super().__init__()
        self.backbone = Backbone(width)
        self.final = nn.Conv2d(self.backbone.out_channels, keypoints, 1)
        feat = (cfg.height // 8) * (cfg.width // 8)
        bins_x, bins_y = cfg.simcc_bins
        self.mlp_x = nn.Linear(feat, bins_x)
        self.mlp_y = nn.Linear(feat, bins_y)
        for layer in (self.mlp_x, self.mlp_y):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)
        nn.init.normal_(self.final.weight, std=0.001)
        nn.init.zeros_(self.final.bias)

    def forward(self, images):
        maps = self.final(self.backbone(images)).flatten(2)   # [B, K, h·w]
        return self.mlp_x(maps), self.mlp_y(maps)


def build_model(mode: str, *, width: int = 32, seed: int = 0,
                cfg: DataConfig = DataConfig()) -> nn.Module:
    """The model for ``mode``, initialised from ``seed`` (same seed, same weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if mode == "heatmap":
            return HeatmapNet(width)
        if mode == "simcc":
            return SimCCNet(width, cfg=cfg)
    raise ValueError(f"mode: expected 'heatmap' or 'simcc', got {mode!r}")
