"""Depth Anything V2 (relative and metric) on our DINOv2 encoder and DPT head, as teachers.

State-dict keys equal the official files' (``depth_anything_v2_vit{s,b,l,g}.pth`` and the metric
``depth_anything_v2_metric_{hypersim,vkitti}_vit*.pth``): ``pretrained.*`` is our
:class:`~.dinov2.DinoVisionTransformer`, ``depth_head.*`` our :class:`~.dpt.DPTHead` in its
``dav2_layout``. The two kinds differ only in the activation after the head (no parameters), so
a file does not say which it is: the config's ``max_depth_m`` does (None = relative).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import IMAGENET_MEAN, IMAGENET_STD, PRESETS, MetricSolverConfig, get_config
from .dinov2 import DinoVisionTransformer
from .dpt import DPTHead
from .metric_solver import build_module

DAV2_PRESETS: tuple[str, ...] = ('vits', 'vitb', 'vitl', 'vitg')
"""The encoders Depth Anything V2 was released with."""

DAV2_HEAD_HIDDEN: int = 32
"""DA-V2's ``head_features_2``: width of the last hidden map, the same for every encoder."""

DINOV2_HEAD_DIM: int = 64
"""Channels per attention head of every DINOv2 ViT (vits 384 / 6 ... vitg 1536 / 24).

Weights do not show the head count; a ``custom`` encoder takes ``embed_dim / 64`` heads.
"""


@dataclass(frozen=True, kw_only=True)
class DepthAnythingV2Config:
    """One Depth Anything V2 network. All fields are keyword-only.

    Encoder sizes and taps come from our preset of the same name (``config.PRESETS``, whose
    heads are DA-V2's sizes): vits 64 / (48, 96, 192, 384), vitb 128 / (96, 192, 384, 768),
    vitl 256 / (256, 512, 1024, 1024), vitg 384 / (1536,) * 4. ``custom`` is the same layout
    at other sizes (no such file is released; small teachers in tests): ``embed_dim``,
    ``depth``, ``features`` and ``out_channels`` are then required, the encoder has
    ``embed_dim / 64`` heads (:data:`DINOV2_HEAD_DIM`), an MLP of 4x and taps at the last block
    of each quarter.

    Attributes:
        preset: 'vits', 'vitb', 'vitl', 'vitg' or 'custom'.
        max_depth_m: The metric model's ``max_depth`` [m] (depth = ``max_depth_m *
            sigmoid(head)``; 20 for the Hypersim, 80 for the Virtual KITTI models), or None for
            the relative model (``relu(head)``, disparity-like, no unit).
        features: DPT fusion width (DA-V2 ``features``); None: the preset's.
        out_channels: Widths of the 4 reassemble stages (DA-V2 ``out_channels``); None: the
            preset's.
        num_register_tokens: DINOv2 register tokens (0 in every released DA-V2 model).
        interpolate_offset: DINOv2's positional-embedding interpolation offset (0.1 released).
        interpolate_antialias: Antialiasing in that interpolation (False released).
        embed_dim: ``custom`` only: the ViT token width, a multiple of 64.
        depth: ``custom`` only: the number of ViT blocks.
    """

    preset: str
    max_depth_m: float | None = None
    features: int | None = None
    out_channels: tuple[int, int, int, int] | None = None
    num_register_tokens: int = 0
    interpolate_offset: float = 0.1
    interpolate_antialias: bool = False
    embed_dim: int | None = None
    depth: int | None = None

    def __post_init__(self) -> None:
        """Fill the head sizes from the preset and validate every field."""
        if self.preset not in (*DAV2_PRESETS, 'custom'):
            raise ValueError(f'invalid Depth Anything V2 config: preset {self.preset!r} is not '
                             f'one of {", ".join(DAV2_PRESETS)} or custom')
        sizes = (self.embed_dim, self.depth, self.features, self.out_channels)
        if self.preset == 'custom' and None in sizes:
            raise ValueError('invalid Depth Anything V2 config: a custom preset needs '
                             'embed_dim, depth, features and out_channels')
        if self.preset != 'custom' and (self.embed_dim, self.depth) != (None, None):
            raise ValueError(f'invalid Depth Anything V2 config: embed_dim and depth are the '
                             f'{self.preset!r} preset\'s; use preset custom for other sizes')
        if self.embed_dim is not None and (self.embed_dim <= 0
                                           or self.embed_dim % DINOV2_HEAD_DIM):
            raise ValueError(f'invalid Depth Anything V2 config: embed_dim {self.embed_dim} '
                             f'must be a positive multiple of {DINOV2_HEAD_DIM} (the DINOv2 '
                             f'head width)')
        if self.features is None:
            object.__setattr__(self, 'features', PRESETS[self.preset].head_features)
        if self.out_channels is None:
            object.__setattr__(self, 'out_channels', PRESETS[self.preset].head_out_channels)
        elif isinstance(self.out_channels, list):
            object.__setattr__(self, 'out_channels', tuple(self.out_channels))
        depth = self.max_depth_m
        if depth is not None:
            if (isinstance(depth, bool) or not isinstance(depth, (int, float))
                    or not math.isfinite(depth) or depth <= 0):
                raise ValueError(f'invalid Depth Anything V2 config: max_depth_m must be None '
                                 f'(relative model) or a finite depth > 0 [m], got {depth!r}')
            object.__setattr__(self, 'max_depth_m', float(depth))
        try:
            self.network_config()  # validates the sizes and encoder settings
        except ValueError as exc:  # its field names: head_features = features, ...
            raise ValueError(f'Depth Anything V2 {exc} (head_features = features, '
                             f'head_out_channels = out_channels)') from None

    @property
    def is_metric(self) -> bool:
        """True for the metric model (``max_depth_m`` set), False for the relative one."""
        return self.max_depth_m is not None

    def network_config(self) -> MetricSolverConfig:
        """Return the encoder and head sizes as the config our DINOv2 and DPT modules take.

        Its anchor, representation and input fields are unused here.

        Raises:
            ValueError: Invalid head sizes or encoder settings.
        """
        settings = {'head_features': self.features, 'head_out_channels': self.out_channels,
                    'head_hidden': DAV2_HEAD_HIDDEN,
                    'num_register_tokens': self.num_register_tokens,
                    'interpolate_offset': self.interpolate_offset,
                    'interpolate_antialias': self.interpolate_antialias}
        if self.preset != 'custom':
            return get_config(self.preset, **settings)
        return MetricSolverConfig(preset='custom', embed_dim=self.embed_dim, depth=self.depth,
                                  num_heads=self.embed_dim // DINOV2_HEAD_DIM, **settings)


def dav2_input_size(image_hw: tuple[int, int], input_size: int = 518,
                    patch_px: int = 14) -> tuple[int, int]:
    """Network input (H, W) [px] for an image, by DA-V2's ``infer_image`` rule.

    ``Resize(keep_aspect_ratio=True, resize_method='lower_bound', ensure_multiple_of=14)``:
    the image is scaled so its shorter side becomes ``input_size``; each side is then rounded
    (half to even) to a multiple of ``patch_px``, rounded up instead where that falls below
    ``input_size``. Equals ``engine.network_input_size`` when ``input_size`` is a multiple of
    ``patch_px``.

    Args:
        image_hw: Image (height, width) [px].
        input_size: Lower bound of both network sides [px].
        patch_px: The encoder's patch size [px].
    """
    height, width = image_hw
    scale = max(input_size / height, input_size / width)

    def constrain(length: float) -> int:
        side = round(length / patch_px) * patch_px
        return side if side >= input_size else math.ceil(length / patch_px) * patch_px

    return constrain(scale * height), constrain(scale * width)


class DepthAnythingV2(nn.Module):
    """Depth Anything V2: image -> relative (disparity-like) or metric depth.

    ``forward`` is pure tensor in / tensor out; :meth:`infer` resizes, normalises and
    un-resizes like DA-V2's ``infer_image``. The device is where the caller put the module.

    Args:
        config: The network.
    """

    def __init__(self, config: DepthAnythingV2Config) -> None:
        super().__init__()
        self.config = config
        network = config.network_config()
        self.taps = network.taps
        self.patch_size = network.patch_size
        self.pretrained = DinoVisionTransformer(network)
        self.depth_head = DPTHead(network, dav2_layout=True)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Predict depth for normalised images.

        Args:
            images: ImageNet-normalised RGB [B, 3, H, W]; H and W multiples of 14 [px].

        Returns:
            float32 [B, 1, H, W]: ``'depth_m'`` in [0, ``max_depth_m``] [m] for the metric model,
            else ``'relative'`` >= 0 (disparity-like: larger is nearer; no unit, no offset).
        """
        height, width = images.shape[-2:]
        features = self.pretrained.get_intermediate_layers(images, self.taps,
                                                           return_class_token=True)
        patch_hw = (height // self.patch_size, width // self.patch_size)
        logit = self.depth_head(features, None, patch_hw, (height, width))[0].float()
        if self.config.max_depth_m is None:
            return {'relative': F.relu(logit)}
        return {'depth_m': torch.sigmoid(logit) * self.config.max_depth_m}

    @torch.no_grad()
    def infer(self, image: np.ndarray | Tensor, input_size: int = 518) -> Tensor:
        """Depth of an RGB image at the image's resolution (DA-V2's ``infer_image``).

        The image is scaled by :func:`dav2_input_size` (bicubic, no antialiasing, as DA-V2's
        ``cv2.INTER_CUBIC``), ImageNet-normalised, run, and the output resized back bilinearly
        (``align_corners=True``). Gradients are off, but the result is an ordinary tensor (usable
        as a training target).

        Args:
            image: RGB uint8 [H, W, 3] (or a batch [B, H, W, 3] of one size), numpy or torch,
                on any device (it is moved to the module's).
            input_size: Shorter side of the network input [px] (DA-V2: 518).

        Returns:
            float32 [H, W] (or [B, H, W]) on the module's device: depth [m] for the metric
            model, the relative output otherwise (see :meth:`forward`).

        Raises:
            ValueError: Not a uint8 RGB image, or an ``input_size`` below the patch size.
        """
        if isinstance(image, np.ndarray):
            pixels = torch.tensor(image)  # a copy: message buffers are read-only
        elif isinstance(image, Tensor):
            pixels = image
        else:
            raise ValueError(f'expected a numpy array or tensor image, got {type(image).__name__}')
        if pixels.dtype != torch.uint8 or pixels.ndim not in (3, 4) or pixels.shape[-1] != 3:
            raise ValueError(f'expected an RGB uint8 image [H, W, 3] or batch [B, H, W, 3], got '
                             f'{pixels.dtype} {tuple(pixels.shape)}')
        if input_size < self.patch_size:
            raise ValueError(f'input_size {input_size} px is below the patch size '
                             f'{self.patch_size} px')
        reference = self.pretrained.pos_embed
        single = pixels.ndim == 3
        x = pixels.unsqueeze(0) if single else pixels
        x = x.to(reference.device).permute(0, 3, 1, 2).float().div_(255.0)
        image_hw = (x.shape[-2], x.shape[-1])
        net_hw = dav2_input_size(image_hw, input_size, self.patch_size)
        x = F.interpolate(x, size=net_hw, mode='bicubic', align_corners=False)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        outputs = self((x - mean).div_(std).to(reference.dtype))
        out = outputs['depth_m' if self.config.max_depth_m is not None else 'relative']
        out = F.interpolate(out, size=image_hw, mode='bilinear', align_corners=True)[:, 0]
        return out[0] if single else out


def create_depth_anything_v2(preset: str | DepthAnythingV2Config,
                             max_depth_m: float | None = None,
                             device: torch.device | str | None = None,
                             dtype: torch.dtype | None = None) -> DepthAnythingV2:
    """Build a randomly initialised :class:`DepthAnythingV2` (in eval mode).

    Official weights load through ``checkpoint.load_depth_anything_v2``.

    Args:
        preset: 'vits', 'vitb', 'vitl', 'vitg', or a full config.
        max_depth_m: With a preset name: the metric model's maximum depth [m], None for the
            relative model. Must be None with a config (it holds its own).
        device: Where to allocate the parameters (default: torch's default device); ``'meta'``
            builds without allocating.
        dtype: Floating dtype of the parameters (default float32).

    Raises:
        ValueError: Unknown preset, invalid ``max_depth_m``, or ``max_depth_m`` with a config.
    """
    if isinstance(preset, DepthAnythingV2Config):
        if max_depth_m is not None:
            raise ValueError('max_depth_m is part of the given config; pass one or the other')
        config = preset
    else:
        config = DepthAnythingV2Config(preset=preset, max_depth_m=max_depth_m)
    return build_module(DepthAnythingV2, config, device, dtype)
