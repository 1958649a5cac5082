"""The anchor-conditioned DPT head (Depth Anything V2 style).

Module names follow Depth Anything V2's ``depth_head`` (``projects``, ``resize_layers``,
``scratch.layerX_rn``, ``scratch.refinenetX``, ``scratch.output_conv1``,
``scratch.output_conv2``) so its weights load where shapes allow. Differences:

- ``projects.i`` takes ``embed_dim + anchor_dim`` input channels: the anchor embedding is
  broadcast over the token grid and concatenated to each tapped feature map. As ``projects`` are
  1x1 convolutions this equals the image part of the projection plus a per-anchor bias, which is
  how it is computed: the image part runs once when one image is decoded for many anchors.
- ``scratch.refinenet4`` has no ``resConfUnit1`` (DA-V2 builds one but never calls it).
- No final ReLU: the head returns a logit map. The near head's ``mask_conv`` maps the last hidden
  feature (``head_hidden`` channels, 32 in DA-V2; ``output_conv2.0`` + ReLU) to mask logits.
- The output is interpolated to ``config.output_size(input)`` (``head_out_scale`` times the
  network input) instead of always the full input size.

``DPTHead(config, dav2_layout=True)`` is Depth Anything V2's own head instead (no anchor input,
the unused ``refinenet4.resConfUnit1`` built): the head of ``depth_anything_v2.DepthAnythingV2``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import MetricSolverConfig


class ResidualConvUnit(nn.Module):
    """``x + conv2(relu(conv1(relu(x))))`` with 3x3 convolutions."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the unit to [B, C, H, W]."""
        out = self.conv2(F.relu(self.conv1(F.relu(x)), inplace=True))
        return out + x


class FeatureFusionBlock(nn.Module):
    """DPT fusion: add the refined skip, refine, 1x1 conv and resample (bilinear, align_corners)."""

    def __init__(self, features: int, has_skip: bool = True) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, kernel_size=1)
        self.resConfUnit1 = ResidualConvUnit(features) if has_skip else None  # noqa: N815
        self.resConfUnit2 = ResidualConvUnit(features)  # noqa: N815

    def forward(self, x: Tensor, skip: Tensor | None = None,
                size: Sequence[int] | None = None) -> Tensor:
        """Fuse ``x`` with ``skip`` and resample to ``size`` (default: twice the size)."""
        if skip is not None:
            if self.resConfUnit1 is None:
                raise ValueError('this fusion block takes no skip input')
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        # DA-V2 upsamples, then applies the 1x1 out_conv. Bilinear interpolation mixes pixels
        # with weights that sum to 1, so it commutes with a 1x1 convolution (bias included):
        # convolving first gives the same map at a quarter of the cost.
        x = self.out_conv(x)
        if size is None:
            return F.interpolate(x, scale_factor=2.0, mode='bilinear', align_corners=True)
        return F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=True)


class DPTHead(nn.Module):
    """One DPT decoder conditioned on the anchor embedding (or DA-V2's own, unconditioned).

    Args:
        config: Uses ``embed_dim``, ``anchor_dim``, ``head_features``, ``head_out_channels``,
            ``head_hidden``.
        with_mask: Build ``mask_conv`` (the near head's mask logits).
        dav2_layout: Depth Anything V2's ``depth_head`` itself: ``projects`` take ``embed_dim``
            channels (no anchor input: ``forward`` takes ``anchor_embedding=None``) and
            ``refinenet4`` builds the ``resConfUnit1`` DA-V2 never calls, so keys and shapes equal
            the official files'.
    """

    def __init__(self, config: MetricSolverConfig, with_mask: bool = False, *,
                 dav2_layout: bool = False) -> None:
        super().__init__()
        dim, oc, features = config.embed_dim, config.head_out_channels, config.head_features
        hidden = config.head_hidden
        self.embed_dim = dim
        self.anchor_dim = 0 if dav2_layout else config.anchor_dim
        self.projects = nn.ModuleList(
            nn.Conv2d(dim + self.anchor_dim, c, kernel_size=1) for c in oc)
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4),
            nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2),
            nn.Identity(),
            nn.Conv2d(oc[3], oc[3], kernel_size=3, stride=2, padding=1),
        ])
        self.scratch = nn.Module()
        for i, c in enumerate(oc, start=1):
            setattr(self.scratch, f'layer{i}_rn',
                    nn.Conv2d(c, features, kernel_size=3, padding=1, bias=False))
        self.scratch.refinenet1 = FeatureFusionBlock(features)
        self.scratch.refinenet2 = FeatureFusionBlock(features)
        self.scratch.refinenet3 = FeatureFusionBlock(features)
        # refinenet4 has no skip input; DA-V2 builds its resConfUnit1 all the same.
        self.scratch.refinenet4 = FeatureFusionBlock(features, has_skip=dav2_layout)
        self.scratch.output_conv1 = nn.Conv2d(features, features // 2, kernel_size=3, padding=1)
        self.scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, hidden, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, kernel_size=1),
        )
        self.mask_conv = nn.Conv2d(hidden, 1, kernel_size=1) if with_mask else None

    def forward(self, features: Sequence[tuple[Tensor, Tensor]], anchor_embedding: Tensor | None,
                patch_hw: tuple[int, int], out_hw: tuple[int, int]
                ) -> tuple[Tensor, Tensor | None]:
        """Decode tapped encoder features for a batch of anchors.

        Args:
            features: 4 pairs ``(patch_tokens [Bf, N, D], class_token [Bf, D])``; the class
                tokens are unused (DA-V2 ``use_clstoken=False``).
            anchor_embedding: [A, anchor_dim]; the batch is ``max(Bf, A)`` (``Bf`` or ``A``
                must be 1 if they differ: one image with many anchors, or one anchor). None for
                (and only for) a ``dav2_layout`` head.
            patch_hw: Token grid (h, w) = input size / patch size.
            out_hw: Output size (h, w) [px].

        Returns:
            ``(depth_logit [B, 1, h, w], mask_logit [B, 1, h, w] or None)``.

        Raises:
            ValueError: An anchor embedding given to a DA-V2 head, or none to a conditioned one.
        """
        if (anchor_embedding is None) != (self.anchor_dim == 0):
            raise ValueError('an anchor-conditioned DPT head needs anchor_embedding; a '
                             'dav2_layout head takes None')
        ph, pw = patch_hw
        layers = []
        for i, (tokens, _cls) in enumerate(features):
            project = self.projects[i]
            weight = project.weight[:, :, 0, 0]
            if anchor_embedding is None:
                x = F.linear(tokens, weight, project.bias)
            else:
                x = F.linear(tokens, weight[:, :self.embed_dim])  # [Bf, N, C], once per image
                bias = F.linear(anchor_embedding.to(x.dtype), weight[:, self.embed_dim:],
                                project.bias)  # [A, C]: the concatenated anchor channels
                x = x + bias.unsqueeze(1)
            x = x.transpose(1, 2).reshape(x.shape[0], x.shape[2], ph, pw)
            layers.append(self.resize_layers[i](x))
        s = self.scratch
        l1, l2, l3, l4 = (s.layer1_rn(layers[0]), s.layer2_rn(layers[1]),
                          s.layer3_rn(layers[2]), s.layer4_rn(layers[3]))
        path = s.refinenet4(l4, size=l3.shape[2:])
        path = s.refinenet3(path, l3, size=l2.shape[2:])
        path = s.refinenet2(path, l2, size=l1.shape[2:])
        path = s.refinenet1(path, l1)
        out = s.output_conv1(path)
        if tuple(out.shape[-2:]) != tuple(out_hw):  # same size: align_corners makes it identity
            out = F.interpolate(out, size=tuple(out_hw), mode='bilinear', align_corners=True)
        hidden = s.output_conv2[1](s.output_conv2[0](out))
        if self.mask_conv is None:
            return s.output_conv2[2](hidden), None
        # The depth and mask 1x1 projections of the same feature, as one convolution.
        depth_conv = s.output_conv2[2]
        weight = torch.cat((depth_conv.weight, self.mask_conv.weight), dim=0)
        bias = torch.cat((depth_conv.bias, self.mask_conv.bias), dim=0)
        logits = F.conv2d(hidden, weight, bias)
        return logits[:, :1], logits[:, 1:]
