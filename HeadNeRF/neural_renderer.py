"""The 2-D neural renderer: volume-rendered feature map (B, C, h, w) -> RGB (B, 3, S, S).

Seed §3.5 (HeadNeRF's renderer), written without kornia:

* A learnable background feature map ``background (1, C, h, w)``, initialised to ones
  (white), is composited in **feature space**: ``fg + (1 - opacity) * background`` (the
  volume-rendered ``fg`` is pre-multiplied by its opacity).
* ``n = log2(S / h)`` upsampling blocks. Block i works at ``c_i`` channels, ``c_0 = C`` and
  ``c_{i+1} = max(c_i // 2, renderer_min_channels)``:
  ``PixelShuffleUpsample(c_i)`` (x repeated 4× on channels + two LeakyReLU 3×3 convs c→2c→4c,
  pixel-shuffle ×2, [1,2,1]⊗[1,2,1] blur), then a 3×3 conv c_i→c_{i+1} + LeakyReLU, whose
  1×1 to-RGB is added to a skip-RGB image that is itself bilinearly upsampled ×2 and blurred
  between blocks (not after the last).
* ``n = 0`` (image size == feature size) is a single 1×1 conv to RGB.
* Sigmoid at the end, so the image is in [0, 1].

The background image (the renderer applied to ``background`` alone) is only computed when
asked for (``render_background``), unlike the seed, which decoded it on every forward.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from .rendering.rays import pixel_strip

__all__ = ["NeuralRenderer", "blur"]


def blur(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W): normalised [1,2,1]⊗[1,2,1] depthwise filter, reflect borders."""
    C = x.shape[1]
    k1 = x.new_tensor([1.0, 2.0, 1.0])
    kernel = (k1[:, None] * k1[None, :] / 16.0).expand(C, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernel, groups=C)


class PixelShuffleUpsample(nn.Module):
    """(B, c, H, W) -> (B, c, 2H, 2W): residual pixel-shuffle upsampling, then blur."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 2 * channels, 3, padding=1)
        self.conv2 = nn.Conv2d(2 * channels, 4 * channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.conv1(x), 0.2)
        out = F.leaky_relu(self.conv2(out), 0.2)
        return blur(F.pixel_shuffle(out + x.repeat(1, 4, 1, 1), 2))


class NeuralRenderer(nn.Module):
    """Feature map -> RGB image, with a learnable feature-space background.

    Args:
        featmap_size: h = w of the input feature map.
        featmap_channels: C.
        image_size: S, output side; ``S / h`` must be a power of two.
        min_channels: narrowest block width (``ModelConfig.renderer_min_channels``).
    """

    def __init__(self, featmap_size: int, featmap_channels: int, image_size: int, min_channels: int):
        super().__init__()
        num_blocks = int(round(math.log2(image_size // featmap_size)))
        if featmap_size * 2**num_blocks != image_size:
            raise ValueError(f"image_size / featmap_size must be a power of two, got {image_size}/{featmap_size}")
        self.background = nn.Parameter(torch.ones(1, featmap_channels, featmap_size, featmap_size))
        channels = [featmap_channels]
        for _ in range(num_blocks):
            channels.append(max(channels[-1] // 2, min_channels))
        self.to_rgb_in = nn.Conv2d(featmap_channels, 3, 1)
        self.upsamples = nn.ModuleList([PixelShuffleUpsample(channels[i]) for i in range(num_blocks)])
        self.convs = nn.ModuleList([nn.Conv2d(channels[i], channels[i + 1], 3, padding=1) for i in range(num_blocks)])
        self.to_rgbs = nn.ModuleList([nn.Conv2d(channels[i + 1], 3, 1) for i in range(num_blocks)])
        # oneDNN's convolutions run ~15% faster on channels-last (NHWC) tensors on CPU (measured at
        # 32²→512²); the layout is internal: inputs and outputs are ordinary (B, C, H, W) tensors.
        for conv in self.modules():
            if isinstance(conv, nn.Conv2d):
                conv.to(memory_format=torch.channels_last)

    @property
    def pointwise(self) -> bool:
        """No upsampling blocks: the renderer is a 1×1 conv, so any subset of pixels can be decoded alone."""
        return len(self.upsamples) == 0

    def composite_background(self, foreground: torch.Tensor, opacity: torch.Tensor,
                             pixels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, h, w) pre-multiplied features, (B, 1, h, w) opacity -> (B, C, h, w).

        With ``pixels (B, K)`` (pointwise renderer only) the inputs are (B, ·, 1, K) strips of
        those pixels and the background is gathered at them.
        """
        background = self.background if pixels is None else pixel_strip(self.background, pixels)  # (B, C, 1, K)
        return foreground + (1.0 - opacity) * background

    def decode(self, featmap: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) feature map -> (B, 3, S, S) RGB in [0, 1]."""
        x = featmap.contiguous(memory_format=torch.channels_last)
        rgb = self.to_rgb_in(x)
        if len(self.upsamples) > 0:
            rgb = blur(F.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False))
        for i, (up, conv, to_rgb) in enumerate(zip(self.upsamples, self.convs, self.to_rgbs)):
            x = F.leaky_relu(conv(up(x)), 0.2)
            rgb = rgb + to_rgb(x)
            if i < len(self.upsamples) - 1:
                rgb = blur(F.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False))
        return torch.sigmoid(rgb).contiguous()

    def forward(self, foreground: torch.Tensor, opacity: torch.Tensor, pixels: torch.Tensor | None = None
                ) -> torch.Tensor:
        """(B, C, h, w) pre-multiplied features, (B, 1, h, w) opacity -> (B, 3, S, S) image.

        ``pixels``: see ``composite_background``; the result is then a (B, 3, 1, K) strip.
        """
        if pixels is not None and not self.pointwise:
            raise ValueError("pixel subsets need a pointwise renderer (featmap_size == image_size)")
        return self.decode(self.composite_background(foreground, opacity, pixels))

    def render_background(self) -> torch.Tensor:
        """(1, 3, S, S): the background feature map alone."""
        return self.decode(self.background)
