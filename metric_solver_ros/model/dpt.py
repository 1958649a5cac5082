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
        if tuple(size) == tuple(x.shape[-2:]):  # align_corners: the same size is the identity
            return x
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
                patch_hw: tuple[int, int], out_hw: tuple[int, int], *,
                reduced_tail: bool = False, shared_stages: bool = False
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
            reduced_tail: Run the finest stages at half resolution: ``refinenet1`` does not
                upsample, ``output_conv1`` runs at the finest tap's grid and the last
                convolutions at half of ``out_hw``, which is then the output size (the caller
                upsamples the logits). About a quarter of those stages' cost; see
                ``benchmarks/multi_anchor.py`` for what it does to the depth.
            shared_stages: With one image (``Bf == 1``) compute the linear stages once for all
                anchors (``_levels``); False (the default): per anchor.

        Returns:
            ``(depth_logit [B, 1, h, w], mask_logit [B, 1, h, w] or None)``; ``(h, w)`` is
            ``out_hw``, or half of it (rounded) with ``reduced_tail``.

        Raises:
            ValueError: An anchor embedding given to a DA-V2 head, or none to a conditioned one.
        """
        if (anchor_embedding is None) != (self.anchor_dim == 0):
            raise ValueError('an anchor-conditioned DPT head needs anchor_embedding; a '
                             'dav2_layout head takes None')
        l1, l2, l3, l4 = self._levels(features, anchor_embedding, patch_hw, shared_stages)
        s = self.scratch
        path = s.refinenet4(l4, size=l3.shape[2:])
        path = s.refinenet3(path, l3, size=l2.shape[2:])
        path = s.refinenet2(path, l2, size=l1.shape[2:])
        path = s.refinenet1(path, l1, size=l1.shape[2:] if reduced_tail else None)
        out = s.output_conv1(path)
        if reduced_tail:
            out_hw = (max(1, round(out_hw[0] / 2)), max(1, round(out_hw[1] / 2)))
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

    def _levels(self, features: Sequence[tuple[Tensor, Tensor]], anchor_embedding: Tensor | None,
                patch_hw: tuple[int, int], shared_stages: bool = False) -> list[Tensor]:
        """The four ``layerX_rn`` maps: projected, resized and mapped to ``head_features``.

        One image decoded at several anchors computes the image's part once: ``projects``,
        ``resize_layers`` and ``layerX_rn`` are linear, so each map is the image's map plus the
        response of the same stages to the anchor's constant projection bias, which
        :func:`constant_response` evaluates on a few cells of the grid.
        """
        ph, pw = patch_hw
        rns = (self.scratch.layer1_rn, self.scratch.layer2_rn, self.scratch.layer3_rn,
               self.scratch.layer4_rn)
        batch_features = features[0][0].shape[0]
        share = shared_stages and anchor_embedding is not None and batch_features == 1
        levels = []
        for i, (tokens, _cls) in enumerate(features):
            project, resize, rn = self.projects[i], self.resize_layers[i], rns[i]
            weight = project.weight[:, :, 0, 0]
            if anchor_embedding is None:
                x = F.linear(tokens, weight, project.bias)
            else:
                x = F.linear(tokens, weight[:, :self.embed_dim], project.bias)  # once per image
                # [A, C]: the concatenated anchor channels, a per-anchor bias of the projection
                bias = F.linear(anchor_embedding.to(x.dtype), weight[:, self.embed_dim:])
                if not share:
                    x = x + bias.unsqueeze(1)
            x = x.transpose(1, 2).reshape(x.shape[0], x.shape[2], ph, pw)
            level = rn(resize(x))
            if share:
                # Channels-last, as the per-anchor path's maps come out of the token grid's
                # transpose: the convolutions after ran 1.4x slower on NCHW maps (the bundled
                # model on a CPU, benchmarks/multi_anchor.py).
                channels_last = torch.channels_last
                level = (level.contiguous(memory_format=channels_last)
                         + constant_response(i, resize, rn, bias, patch_hw).contiguous(
                             memory_format=channels_last))
            levels.append(level)
        return levels


#: Grid cells (per side) on which :func:`constant_response` evaluates each level: the fewest that
#: hold the borders (two output rows or columns at each edge) and a whole period of the interior
#: (4 and 2 rows up-sampled, 1 for the last two levels; the stride-2 level needs 5 output rows).
_RESPONSE_CELLS = (3, 3, 5, 9)


def constant_response(level: int, resize: nn.Module, rn: nn.Module, bias: Tensor,
                      patch_hw: tuple[int, int]) -> Tensor:
    """``rn(resize(map))`` without biases, for maps constant over the token grid.

    The stages are translation-equivariant with zero padding, so the response to a constant map
    is periodic in the interior (period: the up-sampling factor of ``resize``) and differs only
    in the two outermost rows and columns. It is computed on a grid of a few cells
    (``_RESPONSE_CELLS``) and spread to the full map by indexing.

    Args:
        level: Tapped level 0..3 (``resize_layers`` index: 4x, 2x, 1x up; 2x down).
        resize: ``resize_layers[level]`` (its bias belongs to the image part).
        rn: ``scratch.layerX_rn`` (no bias).
        bias: Constant values [A, C] per anchor.
        patch_hw: Token grid (h, w).

    Returns:
        [A, head_features, h', w'], the size of ``rn(resize(x))`` for an x of the token grid.
    """
    cells = _RESPONSE_CELLS[level]
    # the stride-2 level: a grid of the real grid's parity (its last row sees padding or not)
    small_hw = tuple(n if n <= cells + 1 else cells + (n - cells) % 2 for n in patch_hw)
    x = bias[:, :, None, None].expand(-1, -1, *small_hw).contiguous()
    if isinstance(resize, nn.Identity):
        y = x
    elif isinstance(resize, nn.ConvTranspose2d):
        y = F.conv_transpose2d(x, resize.weight, None, resize.stride, resize.padding,
                               resize.output_padding)
    else:
        y = F.conv2d(x, resize.weight, None, resize.stride, resize.padding)
    y = rn(y)
    if tuple(small_hw) == tuple(patch_hw):
        return y
    period = (4, 2, 1, 1)[level]
    rows = _spread_index(_level_size(level, patch_hw[0]), y.shape[2], period, y.device)
    cols = _spread_index(_level_size(level, patch_hw[1]), y.shape[3], period, y.device)
    return y.index_select(2, rows).index_select(3, cols)


def _level_size(level: int, cells: int) -> int:
    """Rows (or columns) of level ``level``'s map for ``cells`` tokens: 4x, 2x, 1x, half up."""
    return (4 * cells, 2 * cells, cells, (cells + 1) // 2)[level]


def _spread_index(out: int, small_out: int, period: int, device: torch.device) -> Tensor:
    """Index into the small grid's output of each of the ``out`` rows (or columns) of the full.

    Two rows at each edge see the zero padding; the rows between repeat with ``period``.
    """
    border = 2
    index = torch.arange(out, device=device)
    interior = border + (index - border) % period
    tail = small_out - (out - index)
    return torch.where(index < border, index, torch.where(index >= out - border, tail, interior))
