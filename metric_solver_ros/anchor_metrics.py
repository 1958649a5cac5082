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

* **Automatic anchor switches** (``auto`` mode over consecutive frames, :class:`AnchorSwitches`,
  :func:`score_auto_anchor`): at a switch, the frame after it is also decoded at the anchor
  before it; ``median_jump`` is the median over switches of ``|ln median(depth at the new
  anchor) - ln median(depth at the old anchor)|`` on that same frame: the jump the switch alone
  puts into the published depth (0: seamless). ``step_at_switch`` / ``step_otherwise``: median
  ``|ln median depth change|`` between consecutive published frames with / without a switch
  (what a consumer sees, scene motion included). Medians over the finite predicted pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from metric_solver_ros.anchor_modes import AnchorSelector, ScaleHandover
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


def _log_median(depth_m: np.ndarray) -> float | None:
    """The log of the median finite positive depth [m], or None without one."""
    depth_m = np.asarray(depth_m)
    with np.errstate(invalid='ignore'):
        finite = depth_m[np.isfinite(depth_m) & (depth_m > 0)]
    return float(np.log(np.median(finite))) if finite.size else None


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


class AnchorSwitches:
    """Records the anchors an automatic selector used over consecutive frames (module docstring).

    Call :meth:`add` once per frame, in order.
    """

    def __init__(self) -> None:
        self.anchors_m: list[float] = []
        self.jumps: list[float] = []
        self.raw_jumps: list[float] = []
        self.steps_at_switch: list[float] = []
        self.steps_otherwise: list[float] = []
        self._last_log: float | None = None

    def add(self, anchor_m: float, depth_m: np.ndarray,
            before_m: np.ndarray | None = None, raw_m: np.ndarray | None = None) -> None:
        """Add one frame.

        Args:
            anchor_m: Anchor [m] the published depth was decoded at.
            depth_m: The published depth [m].
            before_m: When the anchor just changed, the same frame decoded at the previous
                anchor [m].
            raw_m: The new anchor's own depth when the published one was corrected (a
                ``anchor_modes.ScaleHandover``); None: the published depth is its own.
        """
        switched = bool(self.anchors_m) and float(anchor_m) != self.anchors_m[-1]
        log_median = _log_median(depth_m)
        if switched and before_m is not None:
            before = _log_median(before_m)
            raw = log_median if raw_m is None else _log_median(raw_m)
            if before is not None and log_median is not None:
                self.jumps.append(abs(log_median - before))
            if before is not None and raw is not None:
                self.raw_jumps.append(abs(raw - before))
        if self._last_log is not None and log_median is not None:
            step = abs(log_median - self._last_log)
            (self.steps_at_switch if switched else self.steps_otherwise).append(step)
        self.anchors_m.append(float(anchor_m))
        self._last_log = log_median

    def summary(self) -> dict[str, object]:
        """``frames``, ``switches``, ``median_jump`` (and as a ratio), the steps, the anchors.

        ``median_jump`` is the published depth's jump at a switch; ``median_raw_jump`` the two
        anchors' own disagreement on that frame (what a scale handover hides; equal without).
        """
        switches = sum(a != b for a, b in zip(self.anchors_m[:-1], self.anchors_m[1:],
                                               strict=True))
        jump = _median(self.jumps)
        return {
            'frames': len(self.anchors_m), 'switches': switches,
            'median_jump': jump, 'median_jump_ratio': None if jump is None else math.exp(jump),
            'median_raw_jump': _median(self.raw_jumps),
            'step_at_switch': _median(self.steps_at_switch),
            'step_otherwise': _median(self.steps_otherwise),
            'anchors_used_m': sorted(set(self.anchors_m)),
            'anchor_per_frame_m': list(self.anchors_m),
        }


def score_auto_anchor(decode: Callable[[int, float], np.ndarray], frames: int,
                      selector: AnchorSelector,
                      handover: ScaleHandover | None = None) -> dict[str, object]:
    """Run an automatic anchor selector over a sequence and score its switches.

    Args:
        decode: ``(frame index, anchor [m]) -> depth [m]`` (e.g. an engine re-decoding cached
            features); called once per frame, twice at a switch.
        frames: Number of consecutive frames.
        selector: The selector (``anchor_modes``), in its initial state.
        handover: Correct the published scale at switches as the node does, or None.

    Returns:
        :meth:`AnchorSwitches.summary`.
    """
    switches = AnchorSwitches()
    previous = None
    for index in range(frames):
        anchor = selector.current_m
        raw = decode(index, anchor)
        before = decode(index, previous) if previous not in (None, anchor) else None
        depth = raw
        if handover is not None:
            if before is not None:
                handover.start(before, raw)
            depth = handover.apply(raw)
        switches.add(anchor, depth, before, raw)
        selector.update(depth)
        previous = anchor
    return switches.summary()
