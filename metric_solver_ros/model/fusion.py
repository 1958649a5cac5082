"""Multi-anchor fusion rules: one depth per pixel from the decoded maps of several anchors.

Every rule reads what :func:`.representation.decode` returns for the A anchors of ONE image
(``depth_near_m``, ``depth_far_m``, ``near_prob``, ``near``, ``depth_m``; each [A, 1, h, w])
and gives a depth [1, 1, h, w] in float32 (+inf beyond the far limit). The rules and the
measurements that chose the default are in docs/METHOD.md ("Multi-anchor fusion"):

- ``finest``: the near depth of the smallest anchor whose mask says near, else the far depth of
  the largest anchor (:func:`.representation.fuse_anchors`);
- ``median``: per pixel, the median over the anchors of each anchor's own depth (geometric
  mean of the two middle ones for an even count);
- ``covering``: the mean of ``ln depth`` over the near depths of every anchor whose mask says
  near (all of them cover the pixel), weighted by their mask probability; where no anchor says
  near, the far depth of the largest anchor (as ``finest``);
- ``soft``: the mean of ``ln depth`` over both branches of every anchor, each weighted by its
  mask probability (``p`` for the near depth, ``1 - p`` for the far one); +inf where the largest
  anchor says so (the one anchor that sees that far); far depths at +inf carry no weight.

Tried and dropped (docs/METHOD.md has the figures): weighting the branches by their relative
resolution (an output error ``e`` moves the depth by ``e a / d`` near, ``e / (k d d_tf)`` far):
it trusts the small anchors' saturated near outputs and lost 0.05-0.1 delta1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .representation import decode, fuse_anchors, near_decision

if TYPE_CHECKING:
    from .config import MetricSolverConfig

FUSION_RULES: tuple[str, ...] = ('finest', 'median', 'covering', 'soft')
"""Fusion rule names (``DepthEngine(fusion=...)``)."""

DEFAULT_FUSION: str = 'covering'
"""The rule the engine, the node and the tools use unless told otherwise."""

LARGEST_FAR_ONLY: tuple[str, ...] = ('finest', 'covering')
"""Rules that read no far depth but the largest anchor's (the engine decodes only that one)."""


def _weighted_log(logs: Tensor, weights: Tensor, fallback: Tensor) -> Tensor:
    """Per pixel ``sum(w ln d) / sum(w)`` over dim 0; ``fallback`` where every weight is 0."""
    total = weights.sum(dim=0, keepdim=True)
    mean = (weights * logs).sum(dim=0, keepdim=True) / total.clamp(min=1e-30)
    return torch.where(total > 0, mean, fallback)


def _covering(near_log: Tensor, near_prob: Tensor, near: Tensor,
              far_m: Tensor) -> tuple[Tensor, Tensor]:
    """The ``covering`` rule: ``(depth [1, 1, h, w], near_any [1, 1, h, w])``.

    Args:
        near_log: ``ln`` near depth per anchor, [A, 1, h, w].
        near_prob: Mask probability per anchor, [A, 1, h, w].
        near: Near decision per anchor, [A, 1, h, w] bool (``near_prob >= 0.5`` with a mask).
        far_m: The depth where no anchor says near, [1, 1, h, w]: the largest anchor's far
            depth (or any map equal to it there, such as ``finest``).
    """
    weights = torch.where(near, near_prob, torch.zeros((), device=near_prob.device))
    total = weights.sum(dim=0, keepdim=True)
    near_any = total > 0  # a near pixel's weight is its probability, >= 0.5
    mean = (weights * near_log).sum(dim=0, keepdim=True) / total.clamp(min=1e-30)
    return torch.where(near_any, mean.exp(), far_m), near_any


def decode_covering(outputs: dict[str, Tensor], anchors_m: Tensor,
                    config: MetricSolverConfig) -> tuple[Tensor, Tensor]:
    """``fuse_decoded(decode(outputs), rule='covering')`` for ONE image, decoding what it reads.

    The rule reads every anchor's near depth, mask probability and decision, and the far depth
    of the largest anchor only where no anchor says near: decoding just those (no per-anchor far
    maps, no per-pixel anchor pick) gives the same depths (to float32 rounding) at a fraction
    of the cost at full image resolution.

    Args:
        outputs: Logits of the A anchors of one image, each [A, 1, h, w] (as
            :func:`.representation.decode`); ``'d_tf_logit'`` may hold only the largest
            anchor's map ([1, 1, h, w]).
        anchors_m: The A anchor depths [m], shape [A], ascending (the engine's order).
        config: The network's config.

    Returns:
        ``(depth_m, near_any)``, each [1, 1, h, w]: fused depth [m] (float32, +inf beyond the
        far limit) and whether any anchor said near (bool).
    """
    d_sn_logit = outputs['d_sn_logit'].float()
    anchors = anchors_m.float().reshape(-1).to(d_sn_logit.device)
    if anchors.numel() == 1:  # (the rule's one-anchor case: that anchor's own depth)
        decoded = decode(outputs, anchors, config)
        return decoded['depth_m'], decoded['near']
    near, near_prob = near_decision(outputs, d_sn_logit, config)
    near_log = (torch.sigmoid(d_sn_logit) * anchors.view(-1, 1, 1, 1)).log()
    far_outputs = {key: value[-1:] for key, value in outputs.items()}  # the largest anchor's
    far_m = decode(far_outputs, anchors[-1:], config)['depth_far_m']
    return _covering(near_log, near_prob, near, far_m)


def fuse_decoded(decoded: dict[str, Tensor], anchors_m: Tensor, config: MetricSolverConfig,
                 rule: str = 'finest') -> Tensor:
    """Fuse the decoded maps of A anchors of one image with ``rule`` (see the module docstring).

    Args:
        decoded: :func:`.representation.decode` of the A anchors, each [A, 1, h, w].
        anchors_m: The A anchors [m].
        config: The network's config.
        rule: One of :data:`FUSION_RULES`.

    Returns:
        Fused depth [m], [1, 1, h, w] float32; +inf beyond the far limit.

    Raises:
        ValueError: Unknown rule.
    """
    if rule not in FUSION_RULES:
        raise ValueError(f'fusion rule {rule!r} is not one of {", ".join(FUSION_RULES)}')
    anchors = anchors_m.float().reshape(-1).to(decoded['depth_m'].device)
    finest = fuse_anchors(decoded['depth_near_m'], decoded['depth_far_m'], decoded['near'],
                          anchors)[0]
    count = anchors.numel()
    if rule == 'finest' or count == 1:
        return finest
    if rule == 'median':
        ordered = torch.sort(decoded['depth_m'].float(), dim=0).values
        return torch.sqrt(ordered[(count - 1) // 2] * ordered[count // 2]).unsqueeze(0)
    p = decoded['near_prob'].float()
    near_log = decoded['depth_near_m'].float().log()
    if rule == 'covering':
        return _covering(near_log, p, decoded['near'], finest)[0]
    far_m = decoded['depth_far_m'].float()
    finite = torch.isfinite(far_m)
    far_log = torch.where(finite, far_m, torch.ones_like(far_m)).log()
    fused = _weighted_log(torch.cat([near_log, far_log]),
                          torch.cat([p, (1.0 - p) * finite]), finest.log()).exp()
    largest = torch.argmax(anchors).view(1)  # on the device: no host sync (CUDA graphs)
    sky = ~decoded['near'].index_select(0, largest)[0] & ~finite.index_select(0, largest)[0]
    return torch.where(sky.unsqueeze(0), torch.full_like(fused, torch.inf), fused)
