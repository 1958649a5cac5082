"""The training losses of Metric-Solver (paper Sec. 3.3, Eq. 8-11).

For a ground-truth depth ``d`` [m] and the anchor ``a`` [m] of each image (targets from
:func:`metric_solver_ros.model.representation.depth_to_targets`):

- ``L_sn``: L2 between ``sigmoid(d_sn_logit)`` and ``d / a`` over the near pixels
  (valid and ``d <= a``);
- ``L_tf``: L2 between ``sigmoid(d_tf_logit)`` and ``exp(-k (d - a))`` over the far pixels
  (valid and ``d >= a``; sky, ``d = +inf``, is far with target 0);
- ``L_mask``: binary cross-entropy between the mask logit and ``1[d <= a]`` over all valid pixels,
  computed from the logit (``binary_cross_entropy_with_logits``, stable where the probability
  saturates);
- ``L = 1.0 L_sn + 1.0 L_tf + 0.05 L_mask`` (:class:`LossWeights`).

Not in the paper, off by default: ``L_silog``, a scale-invariant log loss on the *soft-fused*
depth ``m a d_sn + (1 - m)(a - ln(d_tf) / k)`` (``m = sigmoid(mask_logit)``, ``d_tf`` clamped at
``d_tf_eps``; :func:`~metric_solver_ros.model.representation.soft_fused_depth`), per image
``mean(e^2) - 0.85 mean(e)^2`` with ``e = ln p - ln d`` over the finite valid pixels (sky
excluded), averaged over the images that have any. The paper's L2 terms act on ``d / a``, so a
pixel's error counts the same at 1 m as at 9 m under a 10 m anchor; this term adds the
relative-depth signal that delta1 measures (weight ``LossWeights.silog``; a probe in
``docs/TRAINING.md``).

Decisions the paper leaves open:

- **Means, not sums.** The paper writes sums over pixels; each term here is the mean over its
  masked pixels, pooled over the whole batch (sum over every masked pixel of every image divided
  by their count), so the weights do not depend on the image size. A term whose mask is empty
  in the whole batch is exactly 0 (no NaN, gradient 0).
- **Invalid pixels** (GT 0, NaN, negative) are excluded from every term; a pixel at exactly
  ``d = a`` is both near and far.
- **Resolution.** The targets are computed at the network output resolution: the GT depth is
  resized there with nearest-neighbour sampling (``'nearest-exact'``), never interpolated
  (which would blend depths across edges and smear +inf / NaN).
- **Precision.** The depth terms compare ``sigmoid(logit)`` in float32 whatever the network's
  (autocast) dtype: near the far targets' small values bf16 loses metres (see ``docs/METHOD.md``).
- **Ablations** follow the model config:

  - ``mask_head=False`` ("w/o mask head"): no BCE term, and the near head is trained on ALL
    valid pixels with the truncated target ``min(d, a) / a`` (sky -> 1), because without a mask
    the decoder calls a pixel near where ``d_sn < 0.99``
    (:data:`~metric_solver_ros.model.representation.NO_MASK_NEAR_THRESHOLD`): the truncation
    is what teaches the near head to say "far". The far term is unchanged.
  - ``far_head=False`` ("one head, hard cap"): no far term; the near head is trained on ALL
    valid pixels with the capped target ``min(d, a) / a`` (sky -> 1), the cap being the anchor
    (train such a model with a fixed anchor, e.g. 80 m, for the paper's baseline).

  Both use :func:`~metric_solver_ros.model.representation.capped_near_target`.
- **Censored depths** (``label_cap_m > 0``; distillation from a teacher whose depth saturates at
  its maximum, ``docs/DISTILL.md``): a pixel at or beyond the cap is known only to lie beyond
  it. It is never a near or SILog pixel. For an anchor below the cap it is taught as far (mask
  target 0) and its far prediction only as a bound: ``relu(d_tf - exp(-k (cap - a)))^2``
  (a depth of at least the cap costs nothing). For an anchor at or above the cap nothing is
  known about it: it is left out of every term.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from metric_solver_ros.model.representation import (
    capped_near_target,
    depth_to_targets,
    far_limit_m,
    soft_fused_depth,
)

if TYPE_CHECKING:
    from metric_solver_ros.model.config import MetricSolverConfig


@dataclass(frozen=True)
class LossWeights:
    """Weights of the three loss terms (paper Eq. 11: 1.0, 1.0, 0.05).

    Attributes:
        sn: Weight of the near-depth L2 term ``lambda_sn``.
        tf: Weight of the far-depth L2 term ``lambda_tf``.
        mask: Weight of the mask BCE term ``lambda_m``.
        silog: Weight of the auxiliary scale-invariant log term (not in the paper; 0 = off).
        consistency: Weight of the cross-anchor consistency term (not in the paper; 0 = off;
            > 0: each image is decoded at two anchors, see :func:`consistency_loss`).
    """

    sn: float = 1.0
    tf: float = 1.0
    mask: float = 0.05
    silog: float = 0.0
    consistency: float = 0.0


def resize_depth_nearest(depth_m: Tensor, size_hw: tuple[int, int]) -> Tensor:
    """Resize ground-truth depth to ``size_hw`` by nearest-neighbour sampling.

    Every output pixel copies one input pixel, so depth edges stay sharp and 0 / NaN / +inf are
    preserved as they are (no interpolation across edges or infinities).

    Args:
        depth_m: Depth [m], shape [B, 1, H, W] (0 / NaN invalid, +inf sky).
        size_hw: Output (h, w) [px].

    Returns:
        float32 depth [m], shape [B, 1, h, w] (the input itself when the size already matches).
    """
    depth = depth_m.float()
    if tuple(depth.shape[-2:]) == tuple(size_hw):
        return depth
    return F.interpolate(depth, size=tuple(size_hw), mode='nearest-exact')


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over the ``True`` pixels of ``mask``; exactly 0 when ``mask`` is empty.

    Unselected values are replaced by 0 before summing (they may be anything finite), and the
    count is clamped to at least 1, so an empty mask gives 0 with a finite (zero) gradient.

    Args:
        values: Per-pixel values, any shape.
        mask: bool tensor of the same shape.

    Returns:
        A float32 scalar.
    """
    values = torch.where(mask, values.float(), torch.zeros((), device=values.device))
    count = mask.sum().clamp(min=1).float()
    return values.sum() / count


SILOG_VARIANCE_FOCUS = 0.85
"""lambda of ``L_silog = mean(e^2) - lambda mean(e)^2`` (BTS / AdaBins; 1: scale-invariant)."""


def silog_loss(pred_m: Tensor, depth_m: Tensor, valid: Tensor,
               variance_focus: float = SILOG_VARIANCE_FOCUS) -> Tensor:
    """Per image ``mean(e^2) - variance_focus * mean(e)^2``, ``e = ln pred - ln depth``.

    Args:
        pred_m: Predicted depth [m] > 0, [B, 1, h, w].
        depth_m: Ground-truth depth [m], same shape.
        valid: bool, same shape: the pixels that count (finite GT > 0).
        variance_focus: lambda (1: scale-invariant, 0: plain mean squared log error).

    Returns:
        float32 scalar: the mean over images with any valid pixel (0 when none has).
    """
    one = torch.ones((), device=pred_m.device)
    e = torch.where(valid, torch.log(pred_m.float().clamp(min=1e-6))
                    - torch.log(torch.where(valid, depth_m.float(), one)), 0.0 * one)
    count = valid.flatten(1).sum(1).float()
    mean_e = e.flatten(1).sum(1) / count.clamp(min=1)
    mean_e2 = (e ** 2).flatten(1).sum(1) / count.clamp(min=1)
    per_image = mean_e2 - variance_focus * mean_e ** 2
    has = count > 0
    return (per_image * has).sum() / has.sum().clamp(min=1)


def metric_solver_loss(outputs: dict[str, Tensor], depth_m: Tensor, anchors_m: Tensor,
                       config: MetricSolverConfig, weights: LossWeights | None = None,
                       label_cap_m: float = 0.0) -> dict[str, Tensor]:
    """Compute the Metric-Solver training loss of one batch (module docstring: the choices).

    Args:
        outputs: ``MetricSolver.forward`` output: ``'d_sn_logit'`` and, where the config has the
            heads, ``'mask_logit'`` and ``'d_tf_logit'``; each [B, 1, h, w], any float dtype.
        depth_m: Ground-truth depth [m], [B, 1, H, W] at any resolution (resized to (h, w) by
            nearest neighbour); 0 / NaN invalid, +inf sky.
        anchors_m: Anchor depth [m] of each image, shape [B].
        config: The model config (``k``, ``mask_head``, ``far_head``).
        weights: Term weights (default: the paper's 1.0, 1.0, 0.05, no SILog).
        label_cap_m: Depths >= this [m] are lower bounds ("censored", e.g. a teacher's
            saturated maximum; 0: none): see the module docstring.

    Returns:
        float32 scalars: ``'loss'`` (the weighted total, differentiable), ``'loss_sn'``,
        ``'loss_tf'``, ``'loss_mask'``, ``'loss_silog'`` and ``'loss_consistency'`` (unweighted
        terms; 0 for a term the config drops or whose weight is 0), and ``'near_fraction'``
        (near pixels / valid pixels, detached; a monitor of the sampled anchors).
    """
    weights = weights or LossWeights()
    d_sn_logit = outputs['d_sn_logit']
    batch = d_sn_logit.shape[0]
    depth = resize_depth_nearest(depth_m.to(d_sn_logit.device), tuple(d_sn_logit.shape[-2:]))
    paired = weights.consistency > 0
    if paired:
        if batch != 2 * depth.shape[0]:
            raise ValueError(f'the consistency term needs every image at two anchors: {batch} '
                             f'outputs for {depth.shape[0]} depth maps')
        depth = depth.repeat(2, 1, 1, 1)
    if depth.shape[0] != batch:
        raise ValueError(f'depth batch {depth.shape[0]} != output batch {batch}')
    a = anchors_m.to(device=depth.device, dtype=torch.float32).reshape(-1, 1, 1, 1)
    if a.shape[0] != batch:
        raise ValueError(f'{a.shape[0]} anchors for a batch of {batch}; need one per image')
    targets = depth_to_targets(depth, a, config.k)
    valid, near_valid, far_valid = targets['valid'], targets['near_valid'], targets['far_valid']
    censored = torch.zeros_like(valid)
    beyond = censored  # censored pixels known to lie beyond their image's anchor
    if label_cap_m > 0:
        censored = valid & (depth >= label_cap_m)
        beyond = censored & (a < label_cap_m)
        near_valid, far_valid = near_valid & ~censored, far_valid & ~censored
    known = valid & (~censored | beyond)  # the pixels whose mask target is known
    zero = torch.zeros((), dtype=torch.float32, device=depth.device)

    d_sn = torch.sigmoid(d_sn_logit.float())
    if config.mask_head and config.far_head:
        loss_sn = masked_mean((d_sn - targets['d_sn']) ** 2, near_valid)
    else:  # truncated / capped near target over every valid pixel (sky: d / a = inf -> 1)
        capped_known = valid & ~(censored & (a > label_cap_m))  # min(d, a) / a is 1 there
        loss_sn = masked_mean((d_sn - capped_near_target(depth, a)) ** 2, capped_known)

    if config.far_head:
        d_tf = torch.sigmoid(outputs['d_tf_logit'].float())
        # A censored pixel lies beyond the cap: its d_tf is at most the cap's (one-sided).
        bound = torch.exp(-config.k * (label_cap_m - a)) if label_cap_m > 0 else zero
        error = torch.where(beyond, F.relu(d_tf - bound) ** 2, (d_tf - targets['d_tf']) ** 2)
        loss_tf = masked_mean(error, far_valid | beyond)
    else:
        loss_tf = zero

    if config.mask_head:
        bce = F.binary_cross_entropy_with_logits(
            outputs['mask_logit'].float(), targets['mask'], reduction='none')
        loss_mask = masked_mean(bce, known)
    else:
        loss_mask = zero

    loss_silog = zero
    if weights.silog > 0:
        if not (config.mask_head and config.far_head):
            raise ValueError('the SILog term needs the mask and far heads (the fused depth)')
        # valid: d > 0. Neither sky (+inf) nor depths beyond the representation's reach
        # (a + ln(1 / d_tf_eps) / k, ~550 m past the anchor; e.g. the horizon of a ground plane)
        # have a log error the fused depth could reduce: both are "infinitely far" to it.
        reach_m = anchors_m.float().reshape(-1, 1, 1, 1).to(depth.device) + far_limit_m(
            0.0, config.k, config.d_tf_eps)  # (the far limit is the anchor plus this)
        finite = valid & ~censored & torch.isfinite(depth) & (depth <= reach_m)
        loss_silog = silog_loss(soft_fused_depth(outputs, anchors_m, config), depth, finite)

    loss_consistency = consistency_loss(outputs, anchors_m, depth, config) if paired else zero

    loss = (weights.sn * loss_sn + weights.tf * loss_tf + weights.mask * loss_mask
            + weights.silog * loss_silog + weights.consistency * loss_consistency)
    near_fraction = (near_valid.sum() / valid.sum().clamp(min=1)).float().detach()
    return {
        'loss': loss,
        'loss_sn': loss_sn,
        'loss_tf': loss_tf,
        'loss_mask': loss_mask,
        'loss_silog': loss_silog,
        'loss_consistency': loss_consistency,
        'near_fraction': near_fraction,
    }


def consistency_loss(outputs: dict[str, Tensor], anchors_m: Tensor, depth_m: Tensor,
                     config: MetricSolverConfig) -> Tensor:
    """Cross-anchor consistency: the same images decoded at two anchors should agree.

    ``outputs`` hold 2B decodes: images ``0..B-1`` at the anchors ``anchors_m[:B]``, then the
    same images at ``anchors_m[B:]`` (``MetricSolver.decode`` with A = 2 Bf). The term is the
    mean over the trusted pixels of ``(ln p1 - ln p2) ** 2``, ``p`` the differentiable
    :func:`soft_fused_depth` of each decode. Trusted: finite valid GT within both anchors' reach
    (the representation says nothing beyond ``a + ln(1 / d_tf_eps) / k``); both decodes get the
    gradient.

    Args:
        outputs: Logits of the 2B decodes, each [2B, 1, h, w], all three heads.
        anchors_m: The 2B anchors [m].
        depth_m: GT depth [m] at the output resolution, [2B, 1, h, w] (the B maps twice).
        config: The model config.

    Returns:
        float32 scalar (0 when no pixel is trusted).
    """
    if not (config.mask_head and config.far_head):
        raise ValueError('the consistency term needs the mask and far heads (the fused depth)')
    half = depth_m.shape[0] // 2
    a = anchors_m.float().reshape(-1, 1, 1, 1).to(depth_m.device)
    reach_m = torch.minimum(a[:half], a[half:]) + far_limit_m(0.0, config.k, config.d_tf_eps)
    depth = depth_m[:half].float()
    trusted = (depth > 0) & torch.isfinite(depth) & (depth <= reach_m)
    log_p = torch.log(soft_fused_depth(outputs, anchors_m, config).clamp(min=1e-6))
    return masked_mean((log_p[:half] - log_p[half:]) ** 2, trusted)
