"""Anchor soundness measured over frames: consistency across anchors and far (sky) decisions.

Pure numpy, like :mod:`metric_solver_ros.metrics`, whose protocol this follows: valid GT pixels
are finite and in ``(min_depth_m, cap_m]``; predictions are clipped to ``[min_depth_m, cap_m]``
(+inf becomes the cap); NaN predictions are left out here (their share is in the metrics).

* **Anchor consistency** (one frame decoded at two or more anchors; the world should not change
  with the anchor):

  - ``scale_spread``: per frame, ``max / min`` over the anchors of the median predicted depth on
    the valid GT pixels; mean over frames. 1.0 is perfect; 1.25 means one anchor sees the scene
    25 % larger than another.
  - ``pixel_log_spread``: per pixel, ``max - min`` over the anchors of ``ln depth``; the median
    over the valid pixels of a frame; mean over frames (0.1 is about 10 % disagreement).
  - both per GT depth band (``metrics.DEPTH_BANDS_M``), per frame where the band has pixels,
    then mean over those frames.

* **Far decisions** (a result that may say +inf, "beyond the far limit"): of the GT sky pixels
  (GT +inf), the share predicted +inf (``sky_as_inf``) and the share predicted beyond
  ``SKY_FAR_M`` or +inf (``sky_beyond_far``); of the GT surface pixels (finite GT above
  ``min_depth_m``, whatever the cap), the share predicted +inf (``surface_as_inf``: real surfaces
  lost). A far limit ``L`` (the node's ``far_limit``: depths beyond it published as +inf) turns
  both into a trade-off curve: ``curve`` gives, for each limit of ``FAR_LIMITS_M``, the share of
  sky and of surfaces predicted beyond it. Pooled over pixels of all frames.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from metric_solver_ros.metrics import DEPTH_BANDS_M, clip_prediction, valid_gt_mask

#: A sky pixel (GT +inf) counts as right when predicted beyond this [m] or +inf.
SKY_FAR_M = 80.0
#: Anchors [m] whose agreement is measured per scene kind (issue goals; training evaluation).
CONSISTENCY_ANCHORS_M: dict[str, tuple[float, ...]] = {'indoor': (1.0, 3.0, 10.0, 40.0),
                                                       'outdoor': (5.0, 20.0, 80.0)}
#: Far limits [m] of the sky / surface trade-off curve (+inf: only what the model calls +inf).
FAR_LIMITS_M: tuple[float, ...] = (40.0, 60.0, 80.0, 100.0, 150.0, 200.0, 300.0, 400.0, 500.0,
                                   math.inf)


def frame_anchor_spread(depths_m: Mapping[float, np.ndarray], gt_m: np.ndarray, *,
                        min_depth_m: float, cap_m: float) -> dict[str, object] | None:
    """Consistency of one frame's depth across anchors.

    Args:
        depths_m: ``{anchor [m]: predicted depth [m], HxW at GT resolution}``, two or more.
        gt_m: GT depth [m], HxW (0 / NaN invalid, +inf sky).
        min_depth_m: Exclusive lower GT limit and prediction clip [m].
        cap_m: Inclusive GT cap and prediction clip [m].

    Returns:
        ``{'scale_spread', 'pixel_log_spread', 'bands': {band: {...}}}`` for the valid pixels
        every anchor predicted (not NaN); None when there are no such pixels or fewer than two
        anchors.
    """
    if len(depths_m) < 2:
        return None
    gt_m = np.asarray(gt_m)
    valid = valid_gt_mask(gt_m, min_depth_m, cap_m)
    stack = np.stack([np.asarray(d, dtype=np.float64)[valid] for d in depths_m.values()])
    predicted = ~np.isnan(stack).any(axis=0)
    if not predicted.any():
        return None
    logs = np.log(clip_prediction(stack[:, predicted], min_depth_m, cap_m))
    gt_valid = gt_m[valid][predicted]
    out = _spread(logs)
    out['bands'] = {}
    for name, lo, hi in DEPTH_BANDS_M:
        in_band = (gt_valid > lo) & (gt_valid <= hi)
        if in_band.any():
            out['bands'][name] = _spread(logs[:, in_band])
    return out


def _spread(logs: np.ndarray) -> dict[str, object]:
    """``scale_spread`` and ``pixel_log_spread`` of ``[anchors, pixels]`` log depths."""
    medians = np.median(logs, axis=1)  # the median commutes with the monotonic log
    return {'scale_spread': float(np.exp(medians.max() - medians.min())),
            'pixel_log_spread': float(np.median(logs.max(axis=0) - logs.min(axis=0)))}


class AnchorConsistency:
    """Accumulates :func:`frame_anchor_spread` over frames.

    Args:
        min_depth_m: Exclusive lower GT limit and prediction clip [m].
        cap_m: Inclusive GT cap and prediction clip [m].
    """

    def __init__(self, *, min_depth_m: float, cap_m: float) -> None:
        self.min_depth_m = float(min_depth_m)
        self.cap_m = float(cap_m)
        self.anchors_m: tuple[float, ...] = ()
        self.per_frame: list[dict[str, object]] = []

    def add(self, depths_m: Mapping[float, np.ndarray], gt_m: np.ndarray) -> None:
        """Add one frame (see :func:`frame_anchor_spread`); frames without pixels are skipped."""
        self.anchors_m = tuple(sorted(set(self.anchors_m) | {float(a) for a in depths_m}))
        frame = frame_anchor_spread(depths_m, gt_m, min_depth_m=self.min_depth_m,
                                    cap_m=self.cap_m)
        if frame is not None:
            self.per_frame.append(frame)

    def summary(self) -> dict[str, object]:
        """Means over frames: ``anchors_m``, ``frames``, the two spreads and ``bands``."""
        out: dict[str, object] = {'anchors_m': list(self.anchors_m),
                                  'frames': len(self.per_frame)}
        out.update(_mean_spreads(self.per_frame))
        out['bands'] = {
            name: {**_mean_spreads(frames), 'frames': len(frames)}
            for name, _, _ in DEPTH_BANDS_M
            if (frames := [f['bands'][name] for f in self.per_frame if name in f['bands']])}
        return out


def _mean_spreads(frames: list[Mapping[str, object]]) -> dict[str, float | None]:
    return {key: (float(np.mean([f[key] for f in frames])) if frames else None)
            for key in ('scale_spread', 'pixel_log_spread')}


class FarDecisions:
    """Pooled counts of sky and surface pixels predicted +inf or beyond far limits.

    Args:
        min_depth_m: GT surfaces are finite and above this [m].
    """

    def __init__(self, *, min_depth_m: float) -> None:
        self.min_depth_m = float(min_depth_m)
        self.sky_pixels = 0
        self.surface_pixels = 0
        self.sky_beyond = np.zeros(len(FAR_LIMITS_M), dtype=np.int64)
        self.surface_beyond = np.zeros(len(FAR_LIMITS_M), dtype=np.int64)

    def add(self, pred_m: np.ndarray, gt_m: np.ndarray) -> None:
        """Count one frame: predicted depth [m] and GT [m], both HxW."""
        pred_m, gt_m = np.asarray(pred_m, dtype=np.float64), np.asarray(gt_m)
        sky = np.isposinf(gt_m)
        surface = np.isfinite(gt_m) & (gt_m > self.min_depth_m)
        self.sky_pixels += int(sky.sum())
        self.surface_pixels += int(surface.sum())
        with np.errstate(invalid='ignore'):  # NaN predictions are beyond nothing
            for k, limit_m in enumerate(FAR_LIMITS_M):
                beyond = np.isposinf(pred_m) if math.isinf(limit_m) else pred_m > limit_m
                self.sky_beyond[k] += int(beyond[sky].sum())
                self.surface_beyond[k] += int(beyond[surface].sum())

    def summary(self) -> dict[str, object]:
        """Shares (None without such pixels) and the trade-off curve; see the module docstring."""
        def share(count: int | np.integer, total: int) -> float | None:
            return float(count) / total if total else None

        return {
            'sky_pixels': self.sky_pixels, 'surface_pixels': self.surface_pixels,
            'sky_as_inf': share(self.sky_beyond[-1], self.sky_pixels),
            'sky_beyond_far': share(self.sky_beyond[FAR_LIMITS_M.index(SKY_FAR_M)],
                                    self.sky_pixels),
            'sky_far_m': SKY_FAR_M,
            'surface_as_inf': share(self.surface_beyond[-1], self.surface_pixels),
            'curve': {
                'far_limit_m': [None if math.isinf(v) else v for v in FAR_LIMITS_M],
                'sky_beyond': [share(c, self.sky_pixels) for c in self.sky_beyond],
                'surface_beyond': [share(c, self.surface_pixels) for c in self.surface_beyond],
            },
        }
