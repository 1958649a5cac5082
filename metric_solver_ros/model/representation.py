"""The anchor-based depth representation (paper Sec. 3.1): targets, inverse maps and fusion.

For an anchor depth ``a`` [m] and a depth ``d`` [m] in [0, inf]:

- near: ``d_sn = d / a`` for ``d <= a`` with mask ``m = 1[d <= a]``; inverse ``d = d_sn * a``;
- far: ``d_tf = exp(-k (d - a))`` for ``d >= a`` (+inf -> 0); inverse ``d = a - ln(d_tf) / k``,
  +inf where ``d_tf < eps`` (beyond :func:`far_limit_m`, REP 117 "too far").

Everything here is computed in float32 whatever the input dtype: with ``k = 0.025`` an error of
0.001 in ``d_tf`` costs 4 m at ``d_tf = 0.01``, so half-precision networks are decoded from their
logits in float32 (``-ln(sigmoid(z)) = softplus(-z)`` is exact even where ``d_tf`` underflows).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import D_TF_EPS, K_TAPER

if TYPE_CHECKING:
    from .config import MetricSolverConfig

NO_MASK_NEAR_THRESHOLD: float = 0.99
"""Without a mask head a pixel counts as near where the predicted ``d_sn`` is below this."""


def _anchor_like(anchor_m: Tensor | float, ref: Tensor) -> Tensor:
    """Return ``anchor_m`` as a float32 tensor on ``ref``'s device."""
    return torch.as_tensor(anchor_m, dtype=torch.float32, device=ref.device)


def _valid(depth_m: Tensor) -> Tensor:
    """The pixels with a ground truth: False for 0, NaN, negatives and -inf; True for +inf."""
    return depth_m > 0


def depth_to_targets(depth_m: Tensor, anchor_m: Tensor | float,
                     k: float = K_TAPER) -> dict[str, Tensor]:
    """Compute the training targets of a ground-truth depth map for one anchor per image.

    Args:
        depth_m: Depth [m], shape [..., H, W]. 0 or NaN marks invalid pixels (excluded from every
            mask); +inf is sky / infinitely far (a valid far pixel with ``d_tf = 0``).
            Negative depths are invalid too.
        anchor_m: Anchor depth [m] > 0: a scalar or a tensor broadcastable to ``depth_m``
            (e.g. [B, 1, 1, 1]).
        k: Taper rate [1/m].

    Returns:
        float32 / bool tensors of ``depth_m``'s shape:
        ``'d_sn'`` d / a in [0, 1] where near-valid, else 0; ``'mask'`` 1.0 where near-valid
        (valid and d <= a), else 0; ``'d_tf'`` exp(-k (d - a)) in [0, 1] where far-valid (valid
        and d >= a; exactly 0 for +inf), else 0; ``'valid'``, ``'near_valid'``, ``'far_valid'``
        (bool). A pixel at exactly d = a is both near- and far-valid.
    """
    d = depth_m.float()
    a = _anchor_like(anchor_m, d)
    valid = _valid(d)
    near_valid = valid & (d <= a)
    far_valid = valid & (d >= a)
    zero = torch.zeros((), dtype=torch.float32, device=d.device)
    d_sn = torch.where(near_valid, (d / a).clamp(0.0, 1.0), zero)
    d_tf = torch.where(far_valid, torch.exp(-k * (d - a)), zero)
    return {
        'd_sn': d_sn,
        'mask': near_valid.float(),
        'd_tf': d_tf,
        'valid': valid,
        'near_valid': near_valid,
        'far_valid': far_valid,
    }


def near_to_depth(d_sn: Tensor, anchor_m: Tensor | float) -> Tensor:
    """Invert the near representation: depth [m] = ``d_sn * a`` (float32)."""
    d_sn = d_sn.float()
    return d_sn * _anchor_like(anchor_m, d_sn)


def far_to_depth(d_tf: Tensor, anchor_m: Tensor | float, k: float = K_TAPER,
                 eps: float = D_TF_EPS) -> Tensor:
    """Invert the far representation: depth [m] = ``a - ln(d_tf) / k`` (float32).

    ``d_tf`` is clamped to at most 1 (depth >= a); ``d_tf < eps`` (including 0) gives +inf.
    """
    d_tf = d_tf.float().clamp(max=1.0)
    a = _anchor_like(anchor_m, d_tf)
    depth = a - torch.log(d_tf.clamp(min=eps)) / k
    return torch.where(d_tf < eps, torch.full_like(depth, math.inf), depth)


def far_limit_m(anchor_m: float, k: float = K_TAPER, eps: float = D_TF_EPS) -> float:
    """Return the largest finite far depth [m] for anchor ``anchor_m`` [m]: ``a - ln(eps) / k``."""
    return float(anchor_m) - math.log(eps) / k


def capped_near_target(depth_m: Tensor, anchor_m: Tensor | float) -> Tensor:
    """The near target of the heads-dropping ablations: ``min(d, a) / a`` over every valid pixel.

    Without a mask head the near head must say "far" itself (the decoder's ``d_sn <``
    :data:`NO_MASK_NEAR_THRESHOLD` rule); without a far head it is the one head, capped at the
    anchor. Either way every valid pixel is trained, the far ones (sky included) towards 1.

    Args:
        depth_m: Depth [m], shape [..., H, W] (0 / NaN / negative invalid, +inf sky).
        anchor_m: Anchor depth [m] > 0, a scalar or broadcastable to ``depth_m``.

    Returns:
        float32 target in [0, 1] of ``depth_m``'s shape; 0 at invalid pixels.
    """
    d = depth_m.float()
    zero = torch.zeros((), dtype=torch.float32, device=d.device)
    return torch.where(_valid(d), (d / _anchor_like(anchor_m, d)).clamp(0.0, 1.0), zero)


def soft_fused_depth(outputs: dict[str, Tensor], anchors_m: Tensor,
                     config: MetricSolverConfig) -> Tensor:
    """The differentiable fused depth [m]: ``m * near + (1 - m) * far`` with the soft mask.

    Training's relative-depth term (``losses.silog_loss``) reads it; inference fuses with the
    thresholded mask instead (:func:`decode`).

    Args:
        outputs: ``MetricSolver.forward`` output with all three logits, [B, 1, h, w].
        anchors_m: Anchor [m] of each image, [B].
        config: The model config (``k``, ``d_tf_eps``).

    Returns:
        float32 depth [m], [B, 1, h, w]; finite (``d_tf`` is clamped at ``d_tf_eps``, i.e. at
        most ``a + ln(1 / d_tf_eps) / k``).
    """
    a = anchors_m.float().reshape(-1, 1, 1, 1).to(outputs['d_sn_logit'].device)
    m = torch.sigmoid(outputs['mask_logit'].float())
    near = near_to_depth(torch.sigmoid(outputs['d_sn_logit'].float()), a)
    d_tf = torch.sigmoid(outputs['d_tf_logit'].float()).clamp(min=config.d_tf_eps)
    far = far_to_depth(d_tf, a, config.k, config.d_tf_eps)
    return m * near + (1.0 - m) * far


def near_decision(outputs: dict[str, Tensor], d_sn_logit: Tensor,
                  config: MetricSolverConfig) -> tuple[Tensor, Tensor]:
    """``(near, near_prob)``: the mask's ``p >= 0.5``, or without a mask ``d_sn < 0.99``."""
    if config.mask_head:
        near_prob = torch.sigmoid(outputs['mask_logit'].float())
        return near_prob >= 0.5, near_prob
    near = torch.sigmoid(d_sn_logit) < NO_MASK_NEAR_THRESHOLD
    return near, near.float()


def decode(outputs: dict[str, Tensor], anchors_m: Tensor,
           config: MetricSolverConfig) -> dict[str, Tensor]:
    """Turn raw network outputs (logits) into metric depth, in float32.

    Args:
        outputs: ``MetricSolver`` outputs: ``'d_sn_logit'`` and, if the heads exist,
            ``'mask_logit'`` and ``'d_tf_logit'``, each [B, 1, h, w] (any float dtype).
        anchors_m: Anchor depth [m] of each batch item, shape [B] (or [B, 1, 1, 1]).
        config: The network's config (``k``, ``d_tf_eps``, ``mask_head``, ``far_head``).

    Returns:
        ``'depth_m'`` [B, 1, h, w] float32 depth [m], +inf beyond the far limit;
        ``'near'`` bool, the pixel is nearer than its anchor (``near_prob >= 0.5``);
        ``'near_prob'`` float32 mask probability; ``'depth_near_m'`` ``d_sn * a``;
        ``'depth_far_m'`` ``a - ln(d_tf) / k`` (+inf where ``d_tf < eps``).

        Without a mask head (``mask_head=False``) a pixel is near where ``d_sn < 0.99``
        (:data:`NO_MASK_NEAR_THRESHOLD`) and ``near_prob`` is that decision as 0/1.
        Without a far head (``far_head=False``, the "one head, hard cap" baseline) the depth is
        ``d_sn * a`` everywhere (capped at the anchor) and ``depth_far_m`` equals ``depth_near_m``.
    """
    d_sn_logit = outputs['d_sn_logit'].float()
    a = anchors_m.float().to(d_sn_logit.device).reshape(-1, 1, 1, 1)
    depth_near = torch.sigmoid(d_sn_logit) * a
    near, near_prob = near_decision(outputs, d_sn_logit, config)
    if config.far_head:
        # -ln(sigmoid(z)) = softplus(-z): exact where d_tf is far below fp16/bf16 resolution.
        neg_log_d_tf = F.softplus(-outputs['d_tf_logit'].float())
        depth_far = a + neg_log_d_tf / config.k
        too_far = neg_log_d_tf > -math.log(config.d_tf_eps)
        depth_far = torch.where(too_far, torch.full_like(depth_far, math.inf), depth_far)
        depth = torch.where(near, depth_near, depth_far)
    else:
        depth_far = depth_near
        depth = depth_near
    return {
        'depth_m': depth,
        'near': near,
        'near_prob': near_prob,
        'depth_near_m': depth_near,
        'depth_far_m': depth_far,
    }


_MAX_FUSED_ANCHORS = 16


def _first_set_bit_table(num: int, device: torch.device) -> Tensor:
    """Lookup: ``code`` (bit ``num-1-i`` set when the i-th anchor says near) -> smallest i."""
    codes = torch.arange(1 << num, device=device)
    table = torch.zeros(1 << num, dtype=torch.long, device=device)
    for i in range(num - 1, -1, -1):  # the smallest i wins: written last
        table = torch.where((codes >> (num - 1 - i)) & 1 == 1, i, table)
    return table


def _select_anchor(near: Tensor, anchors_m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per pixel, the anchor fusion uses: ``(anchor_index, near_any, largest)``.

    ``anchor_index`` [1, 1, h, w] (long) is the smallest anchor whose mask says near, else the
    largest anchor (index ``largest``, a 0-d tensor); ``near_any`` [1, 1, h, w] is whether any
    anchor said near. ``near`` is [A, 1, h, w] bool, ``anchors_m`` the A anchors in any order.
    """
    num = near.shape[0]
    if num > _MAX_FUSED_ANCHORS:
        raise ValueError(f'fuse_anchors: at most {_MAX_FUSED_ANCHORS} anchors, got {num}')
    anchors = anchors_m.reshape(-1).to(near.device)
    order = torch.argsort(anchors.float())  # ascending anchor depth
    largest = order[-1]
    # First anchor (in ascending order) that says near, per pixel. A weighted sum over the
    # anchor axis (bit A-1-i for the i-th smallest) and a lookup of its highest set bit: the
    # same answer as an argmax over that axis, an order of magnitude faster on CPUs.
    bits = (1 << torch.arange(num - 1, -1, -1, device=near.device, dtype=torch.int32))
    code = (near.to(torch.int32)[order] * bits.view(-1, 1, 1, 1)).sum(dim=0, keepdim=True)
    first_near = _first_set_bit_table(num, near.device)[code]
    near_any = code > 0
    return torch.where(near_any, order[first_near], largest), near_any, largest


def fuse_anchors(depth_near_m: Tensor, depth_far_m: Tensor, near: Tensor,
                 anchors_m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Fuse the decoded predictions of several anchors for ONE image (docs/METHOD.md's rule).

    Per pixel: the near prediction of the smallest anchor whose mask says near (the finest
    resolution that covers the pixel); where no anchor says near, the far prediction of the
    largest anchor.

    Args:
        depth_near_m: Near depth [m] per anchor, [A, 1, h, w].
        depth_far_m: Far depth [m] per anchor, [A, 1, h, w].
        near: Near decision per anchor, [A, 1, h, w] bool.
        anchors_m: The A anchor depths [m], shape [A], in any order.

    Returns:
        ``(depth_m, near_any, anchor_index)``, each [1, 1, h, w]: fused depth [m] (float32),
        whether any anchor said near (bool), and the index into ``anchors_m`` of the anchor
        whose prediction was used (long).
    """
    num = depth_near_m.shape[0]
    if not (depth_far_m.shape[0] == near.shape[0] == num == anchors_m.numel()):
        raise ValueError(f'fuse_anchors: {num} near maps, {depth_far_m.shape[0]} far maps, '
                         f'{near.shape[0]} masks and {anchors_m.numel()} anchors must agree')
    anchor_index, near_any, largest = _select_anchor(near, anchors_m)
    depth_near = torch.gather(depth_near_m.float(), 0, anchor_index)
    depth_far = depth_far_m[largest].float().unsqueeze(0)
    depth = torch.where(near_any, depth_near, depth_far)
    return depth, near_any, anchor_index


def decode_fused(outputs: dict[str, Tensor], anchors_m: Tensor,
                 config: MetricSolverConfig) -> tuple[Tensor, Tensor, Tensor]:
    """``fuse_anchors(decode(outputs))`` for ONE image, decoding only what fusion reads.

    Fusion needs every anchor's near decision, the near depth of the anchor each pixel picks and
    the far depth of the largest anchor only; decoding just those (a gather of the near logits,
    one far map) gives the same pixels, anchors and depths (to float32 rounding) as
    decoding all A anchors and then fusing, at a fraction of the cost at full image resolution.

    Args:
        outputs: Logits of the A anchors of one image, each [A, 1, h, w] (as :func:`decode`);
            ``'d_tf_logit'`` may hold only the largest anchor's map ([1, 1, h, w]), the only
            one fusion reads.
        anchors_m: The A anchor depths [m], shape [A], in any order.
        config: The network's config.

    Returns:
        ``(depth_m, near_any, anchor_index)`` as :func:`fuse_anchors`.
    """
    d_sn_logit = outputs['d_sn_logit'].float()
    anchors = anchors_m.float().reshape(-1).to(d_sn_logit.device)
    near, _ = near_decision(outputs, d_sn_logit, config)
    anchor_index, near_any, largest = _select_anchor(near, anchors)
    depth_near = torch.sigmoid(torch.gather(d_sn_logit, 0, anchor_index)) * anchors[anchor_index]
    # index_select with the device tensor: no host sync (the engine's CUDA graph holds this)
    pick = largest.view(1)
    far_outputs = {'d_sn_logit': d_sn_logit.index_select(0, pick)}
    if config.far_head:
        d_tf_logit = outputs['d_tf_logit']
        far_outputs['d_tf_logit'] = (d_tf_logit.index_select(0, pick) if d_tf_logit.shape[0] > 1
                                     else d_tf_logit[:1])
    if config.mask_head:
        far_outputs['mask_logit'] = outputs['mask_logit'].index_select(0, pick)
    depth_far = decode(far_outputs, anchors.index_select(0, pick), config)['depth_far_m']
    return torch.where(near_any, depth_near, depth_far), near_any, anchor_index
