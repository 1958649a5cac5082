"""The Metric-Solver network: DINOv2 encoder, anchor pool, near and far DPT heads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .anchor import AnchorPool
from .config import MetricSolverConfig, get_config
from .dinov2 import DinoVisionTransformer
from .dpt import DPTHead

Features = tuple[tuple[Tensor, Tensor], ...]


class MetricSolver(nn.Module):
    """Image + anchor depths -> logits of the near depth, near mask and far depth.

    ``forward`` is pure tensor in / tensor out (compile and export friendly): no resizing, no
    normalisation and no units beyond the anchors [m]; :func:`..representation.decode` turns the
    logits into metric depth. The encoder does not depend on the anchor: ``encode`` once, then
    ``decode`` any number of anchors as one batch.

    Submodules: ``pretrained`` (DINOv2 ViT; Depth Anything V2's name), ``anchor_pool``,
    ``near_head`` and ``far_head`` (None when ``config.far_head`` is False).

    Args:
        config: The architecture.
    """

    def __init__(self, config: MetricSolverConfig) -> None:
        super().__init__()
        self.config = config
        self.pretrained = DinoVisionTransformer(config)
        self.anchor_pool = AnchorPool(config.anchor_pool_m, config.anchor_dim)
        self.near_head = DPTHead(config, with_mask=config.mask_head)
        self.far_head = DPTHead(config) if config.far_head else None

    def encode(self, images: Tensor) -> Features:
        """Run the encoder.

        Args:
            images: Normalised images [B, 3, H, W]; H and W multiples of the patch size (14).

        Returns:
            The 4 tapped layers as ``(patch_tokens [B, N, D], class_token [B, D])`` pairs.
        """
        return self.pretrained.get_intermediate_layers(
            images, self.config.taps, return_class_token=True)

    def decode(self, features: Features, anchors_m: Tensor, patch_hw: tuple[int, int], *,
               check_anchors: bool = True, reduced_tail: bool = False,
               shared_stages: bool = False) -> dict[str, Tensor]:
        """Run the heads for a batch of anchors.

        Args:
            features: Output of :meth:`encode` with batch ``Bf``.
            anchors_m: Anchor depths [m], shape [A]. With ``Bf == 1`` and ``A > 1`` the single
                image is decoded for every anchor in ONE batched call; with ``A == 1`` the anchor
                applies to every image; with ``A = n Bf`` every image is decoded at n anchors
                (anchor ``j`` goes with image ``j % Bf``: the images repeated n times, as the
                consistency term of training reads them); otherwise ``A`` must equal ``Bf``.
            patch_hw: Token grid (h, w): the network input size divided by the patch size.
            check_anchors: Validate the anchors against the pool range on the host (a device
                sync; skipped while compiling). Pass False after ``anchor_pool.validate``.
            reduced_tail: The heads' finest stages at half resolution (``DPTHead.forward``):
                the logits come at half of ``config.output_size``.
            shared_stages: With one image, compute the heads' linear stages once for all
                anchors (exact; ``DPTHead._levels``; the engine's choice on CUDA); False: per
                anchor (faster for the bundled model on a CPU).

        Returns:
            ``'d_sn_logit'``, ``'mask_logit'`` (if ``config.mask_head``) and ``'d_tf_logit'``
            (if ``config.far_head``), each [max(Bf, A), 1, h, w] with
            ``(h, w) = config.output_size(input size)`` (half of it with ``reduced_tail``).

        Raises:
            ValueError: Anchors outside the pool range or batch sizes that do not match.
        """
        anchors = anchors_m.reshape(-1)
        batch_features, batch_anchors = features[0][0].shape[0], anchors.shape[0]
        if batch_features != batch_anchors and 1 not in (batch_features, batch_anchors):
            if batch_anchors % batch_features:
                raise ValueError(f'decode: {batch_anchors} anchors for features of batch '
                                 f'{batch_features}; use one anchor per image (or n per image), '
                                 'one image or one anchor')
            repeats = batch_anchors // batch_features
            features = [(t.repeat(repeats, 1, 1), c.repeat(repeats, 1)) for t, c in features]
        embedding = self.anchor_pool(anchors, check=check_anchors)
        patch = self.config.patch_size
        out_hw = self.config.output_size((patch_hw[0] * patch, patch_hw[1] * patch))
        options = {'reduced_tail': reduced_tail, 'shared_stages': shared_stages}
        d_sn_logit, mask_logit = self.near_head(features, embedding, patch_hw, out_hw, **options)
        outputs = {'d_sn_logit': d_sn_logit}
        if mask_logit is not None:
            outputs['mask_logit'] = mask_logit
        if self.far_head is not None:
            outputs['d_tf_logit'] = self.far_head(features, embedding, patch_hw, out_hw,
                                                  **options)[0]
        return outputs

    def forward(self, images: Tensor, anchors_m: Tensor, *,
                check_anchors: bool = True) -> dict[str, Tensor]:
        """Encode ``images`` [B, 3, H, W] and decode ``anchors_m`` [A] (see :meth:`decode`)."""
        patch = self.config.patch_size
        patch_hw = (images.shape[-2] // patch, images.shape[-1] // patch)
        return self.decode(self.encode(images), anchors_m, patch_hw,
                           check_anchors=check_anchors)


def create_model(config: MetricSolverConfig | str, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> MetricSolver:
    """Build a randomly initialised :class:`MetricSolver` (in eval mode).

    Args:
        config: A config or a preset name (see ``PRESETS``).
        device: Where to allocate the parameters (default: torch's default device); ``'meta'``
            builds without allocating (for counting parameters of large presets).
        dtype: Floating dtype of the parameters (default float32). The anchor pool values stay
            float32.
    """
    if isinstance(config, str):
        config = get_config(config)
    return build_module(MetricSolver, config, device, dtype)


def build_module(cls: type[nn.Module], config: Any, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> nn.Module:
    """``cls(config)`` built on ``device`` (e.g. ``'meta'``), cast to ``dtype``, in eval mode."""
    if device is not None:
        with torch.device(device):
            model = cls(config)
    else:
        model = cls(config)
    if dtype is not None:
        model.to(dtype=dtype)
    return model.eval()


def count_parameters(model: MetricSolver) -> dict[str, int]:
    """Return parameter counts per part: encoder, near_head, far_head, anchor_pool and total."""

    def count(module: nn.Module | None) -> int:
        return 0 if module is None else sum(p.numel() for p in module.parameters())

    counts = {
        'encoder': count(model.pretrained),
        'near_head': count(model.near_head),
        'far_head': count(model.far_head),
        'anchor_pool': count(model.anchor_pool),
    }
    counts['total'] = count(model)
    return counts


def parameter_groups(model: MetricSolver) -> Sequence[tuple[str, list[nn.Parameter]]]:
    """Split parameters into ``('encoder', ...)`` and ``('heads', ...)`` (heads + anchor pool).

    For optimisers that give the heads a larger learning rate than the encoder (docs/METHOD.md).
    """
    encoder = list(model.pretrained.parameters())
    encoder_ids = {id(p) for p in encoder}
    heads = [p for p in model.parameters() if id(p) not in encoder_ids]
    return (('encoder', encoder), ('heads', heads))
