"""Depth accuracy metrics of the Metric-Solver paper (Sec. 4.2, App. G), in pure numpy.

Protocol (``docs/METHOD.md``, "Evaluation protocol"):

* **Valid pixels** are ground-truth (GT) pixels that are finite, ``> min_depth_m`` and
  ``<= cap_m`` (10 m indoors, 80 m outdoors in the paper), taken at GT resolution. GT zeros and
  NaN ("no measurement") and +inf (sky, "too far") are therefore never scored.
* **Predictions** are clipped to ``[min_depth_m, cap_m]`` before any metric: +inf ("too far")
  becomes ``cap_m``, -inf ("too close") becomes ``min_depth_m``. **NaN predictions count as
  wrong**: they are set to ``min_depth_m`` (so they fail every delta threshold and cost about 1 in
  AbsRel), never excluded, and the share of valid pixels they cover is reported as
  ``pred_nan_fraction``.
* Metrics over the ``n`` valid pixels, with ``p`` the clipped prediction and ``g`` the GT [m]:

  - ``delta1/2/3``: fraction with ``max(p / g, g / p) < 1.25 ** k`` for k = 1, 2, 3;
  - ``abs_rel``: ``mean(|p - g| / g)``;
  - ``sq_rel`` [m]: ``mean((p - g) ** 2 / g)``;
  - ``rmse`` [m]: ``sqrt(mean((p - g) ** 2))``;
  - ``rmse_log``: ``sqrt(mean((ln p - ln g) ** 2))`` (``sq_rel`` and ``rmse_log`` are not in the
    paper; the Eigen et al. set that KITTI tables and Depth Anything V2's metric code report);
  - ``log10``: ``mean(|log10 p - log10 g|)``;
  - ``silog``: ``100 * sqrt(mean(e ** 2) - SILOG_LAMBDA * mean(e) ** 2)`` with
    ``e = ln p - ln g`` and ``SILOG_LAMBDA = 1.0`` (the scale-invariant log error of the KITTI
    benchmark and of the ZoeDepth / Depth Anything (V1) evaluation code; Depth Anything V2's
    metric code uses ``sqrt(mean(e ** 2) - 0.5 * mean(e) ** 2)`` without the factor 100, so its
    numbers are not comparable; the 0.85 variant is a training loss, not an evaluation
    metric). The radicand is clamped at 0 against round-off.

* **Aggregation**: per frame, then (headline, like the papers) the **mean over frames** of the
  per-frame values, skipping frames without valid pixels; also the **pixel mean**, pooling every
  valid pixel of every frame as one set (RMSE and SILog recomputed from pooled sums, not averaged).
* **Depth bands** of GT, ``(lo, hi]`` in metres: 0-2, 2-5, 5-10, 10-20, 20-80, >80. Band metrics
  pool pixels over frames (a band is often absent or tiny in a frame, which would make a mean
  over frames noisy); each band also reports its pixel and frame counts.
* **Scale diagnostics** (per frame, over the valid pixels and the clipped prediction):
  ``scale_ratio = median(g) / median(p)`` over the pixels with a prediction (not NaN) and
  ``delta1_aligned``, the delta1 of ``scale_ratio * p`` (median scaling, the relative-depth
  protocol; NaN predictions still count as wrong). A metric model whose
  ``delta1_aligned`` is far above its ``delta1`` has the structure right and the scale wrong.
  Headline: the mean of ``delta1_aligned`` over frames and ``scale_error =
  exp(mean |ln scale_ratio|)`` (1: right scale; 1.5: a typical frame is 1.5x off either way).
  Across frames, ``scale_slope``: the least-squares slope of ``ln median(p)`` on
  ``ln median(g)`` (1: the prediction follows each scene's depth; 0: the same depth whatever
  the scene; None below 3 frames or when the scenes' medians do not differ).
* **Mask accuracy** (anchor results only): fraction of pixels where the predicted near mask equals
  ``1[g <= anchor]``, over pixels whose GT is a known depth ``> min_depth_m``; unlike the depth
  metrics this includes GT beyond the cap and +inf (sky), which are certainly "far". Headline:
  mean over frames; the pooled value is in the pixel mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

#: Metric names, in report order (the headline metrics of the paper plus SILog).
METRIC_NAMES: tuple[str, ...] = (
    'delta1', 'delta2', 'delta3', 'abs_rel', 'sq_rel', 'rmse', 'rmse_log', 'log10', 'silog')
#: Default lower GT / prediction limit [m].
DEFAULT_MIN_DEPTH_M = 1e-3
#: Default evaluation cap [m] (the paper's outdoor cap; use 10 indoors).
DEFAULT_CAP_M = 80.0
#: The paper's indoor evaluation cap [m].
INDOOR_CAP_M = 10.0
#: Largest share of a scene's GT beyond :data:`INDOOR_CAP_M` for which it counts as indoors
#: (its 95th percentile within the indoor cap).
INDOOR_FAR_SHARE = 0.05
#: Weight of the squared-mean term in SILog (1.0: the variance of the log error).
SILOG_LAMBDA = 1.0
#: GT depth bands (name, lo, hi) [m]; a pixel belongs to a band when lo < g <= hi.
DEPTH_BANDS_M: tuple[tuple[str, float, float], ...] = (
    ('0-2', 0.0, 2.0), ('2-5', 2.0, 5.0), ('5-10', 5.0, 10.0), ('10-20', 10.0, 20.0),
    ('20-80', 20.0, 80.0), ('>80', 80.0, math.inf))
#: Number of geometric GT-depth bins of the AbsRel-versus-depth curve.
CURVE_BINS = 24


def _check_shapes(pred_m: np.ndarray, gt_m: np.ndarray) -> None:
    """Raise ValueError unless both arrays are 2-D with equal shapes."""
    if pred_m.ndim != 2 or pred_m.shape != gt_m.shape:
        raise ValueError(
            f'prediction {pred_m.shape} and ground truth {gt_m.shape} must be 2-D arrays of the '
            'same shape (resize the prediction to the GT resolution first)')


def _check_limits(min_depth_m: float, cap_m: float) -> None:
    """Raise ValueError unless ``0 < min_depth_m < cap_m`` and ``cap_m`` is finite.

    ``min_depth_m`` must be positive: predictions are clipped to it (NaN becomes it), and the
    log metrics (log10, SILog) and the median scaling are undefined at 0.
    """
    if not (0.0 < min_depth_m < cap_m < math.inf):
        raise ValueError(
            f'need 0 < min_depth < cap < inf, got min_depth={min_depth_m} m, cap={cap_m} m')


def suggested_cap_m(gt_m: np.ndarray, min_depth_m: float = DEFAULT_MIN_DEPTH_M
                    ) -> tuple[float, float] | None:
    """The paper's cap that fits a scene: indoor when its GT lies within the indoor cap.

    Args:
        gt_m: Ground-truth depth [m], any shape; NaN and values <= ``min_depth_m`` are no GT,
            +inf (sky, too far) is GT beyond any cap.
        min_depth_m: Exclusive lower GT limit [m].

    Returns:
        ``(cap [m], share of the GT beyond INDOOR_CAP_M)``: :data:`INDOOR_CAP_M` when that share
        is at most :data:`INDOOR_FAR_SHARE`, else :data:`DEFAULT_CAP_M`; None without GT.
    """
    gt_m = np.asarray(gt_m)
    with np.errstate(invalid='ignore'):
        total = int(np.count_nonzero(gt_m > min_depth_m))  # NaN compares False
        far = int(np.count_nonzero(gt_m > INDOOR_CAP_M))
    if not total:
        return None
    share = far / total
    return (INDOOR_CAP_M if share <= INDOOR_FAR_SHARE else DEFAULT_CAP_M), share


def valid_gt_mask(gt_m: np.ndarray, min_depth_m: float = DEFAULT_MIN_DEPTH_M,
                  cap_m: float = DEFAULT_CAP_M) -> np.ndarray:
    """Return the pixels scored by the depth metrics.

    Args:
        gt_m: Ground-truth depth [m], any shape; 0 / NaN invalid, +inf sky.
        min_depth_m: Exclusive lower limit [m].
        cap_m: Inclusive upper limit [m].

    Returns:
        bool array: finite and ``min_depth_m < g <= cap_m``.
    """
    gt_m = np.asarray(gt_m)
    with np.errstate(invalid='ignore'):
        return np.isfinite(gt_m) & (gt_m > min_depth_m) & (gt_m <= cap_m)


def clip_prediction(pred_m: np.ndarray, min_depth_m: float = DEFAULT_MIN_DEPTH_M,
                    cap_m: float = DEFAULT_CAP_M) -> np.ndarray:
    """Clip a prediction to ``[min_depth_m, cap_m]`` with the module's NaN rule.

    Args:
        pred_m: Predicted depth [m]; +inf "too far", -inf "too close", NaN undefined.
        min_depth_m: Lower limit [m]; also the value given to NaN (a guaranteed-wrong depth).
        cap_m: Upper limit [m]; +inf becomes this.

    Returns:
        float64 array of the same shape, finite, within the limits.
    """
    pred = np.asarray(pred_m, dtype=np.float64)
    return np.clip(np.nan_to_num(pred, nan=min_depth_m, posinf=cap_m, neginf=min_depth_m),
                   min_depth_m, cap_m)


@dataclass
class MetricSums:
    """Additive per-pixel sums from which every metric follows (so frames pool exactly).

    Attributes:
        n: Number of valid pixels.
        n_delta1: Pixels with ratio < 1.25.
        n_delta2: Pixels with ratio < 1.25 ** 2.
        n_delta3: Pixels with ratio < 1.25 ** 3.
        abs_rel: Sum of ``|p - g| / g``.
        sq_rel_m: Sum of ``(p - g) ** 2 / g`` [m].
        sq_err_m2: Sum of ``(p - g) ** 2`` [m^2].
        log10: Sum of ``|log10 p - log10 g|``.
        log_err: Sum of ``ln p - ln g``.
        log_err_sq: Sum of ``(ln p - ln g) ** 2``.
        n_pred_nan: Valid pixels whose prediction was NaN.
    """

    n: int = 0
    n_delta1: int = 0
    n_delta2: int = 0
    n_delta3: int = 0
    abs_rel: float = 0.0
    sq_rel_m: float = 0.0
    sq_err_m2: float = 0.0
    log10: float = 0.0
    log_err: float = 0.0
    log_err_sq: float = 0.0
    n_pred_nan: int = 0

    @classmethod
    def from_pixels(cls, pred_m: np.ndarray, gt_m: np.ndarray, pred_nan: np.ndarray | None = None,
                    ) -> MetricSums:
        """Sum over pixels already selected as valid.

        Args:
            pred_m: Clipped predictions [m], 1-D, all > 0 and finite.
            gt_m: GT [m], 1-D, same length, all > 0 and finite.
            pred_nan: Optional bool array, same length: which predictions were NaN.

        Returns:
            The sums of these pixels.
        """
        p = np.asarray(pred_m, dtype=np.float64)
        g = np.asarray(gt_m, dtype=np.float64)
        if p.size == 0:
            return cls()
        ratio = np.maximum(p / g, g / p)
        log_err = np.log(p) - np.log(g)
        return cls(
            n=int(p.size),
            n_delta1=int(np.count_nonzero(ratio < 1.25)),
            n_delta2=int(np.count_nonzero(ratio < 1.25 ** 2)),
            n_delta3=int(np.count_nonzero(ratio < 1.25 ** 3)),
            abs_rel=float(np.sum(np.abs(p - g) / g)),
            sq_rel_m=float(np.sum((p - g) ** 2 / g)),
            sq_err_m2=float(np.sum((p - g) ** 2)),
            log10=float(np.sum(np.abs(np.log10(p) - np.log10(g)))),
            log_err=float(np.sum(log_err)),
            log_err_sq=float(np.sum(log_err ** 2)),
            n_pred_nan=0 if pred_nan is None else int(np.count_nonzero(pred_nan)),
        )

    def __add__(self, other: MetricSums) -> MetricSums:
        return MetricSums(*(getattr(self, f.name) + getattr(other, f.name)
                            for f in fields(MetricSums)))

    def finalize(self) -> dict[str, float | None]:
        """Return the metrics of these pixels (values None when ``n == 0``), plus ``n_pixels``.

        Returns:
            ``{'delta1', 'delta2', 'delta3', 'abs_rel', 'sq_rel' [m], 'rmse' [m], 'rmse_log',
            'log10', 'silog', 'pred_nan_fraction', 'n_pixels'}``.
        """
        n = self.n
        if n == 0:
            out: dict[str, float | None] = dict.fromkeys(METRIC_NAMES)
            out['pred_nan_fraction'] = None
            out['n_pixels'] = 0
            return out
        mean_e = self.log_err / n
        return {
            'delta1': self.n_delta1 / n,
            'delta2': self.n_delta2 / n,
            'delta3': self.n_delta3 / n,
            'abs_rel': self.abs_rel / n,
            'sq_rel': self.sq_rel_m / n,
            'rmse': math.sqrt(self.sq_err_m2 / n),
            'rmse_log': math.sqrt(self.log_err_sq / n),
            'log10': self.log10 / n,
            'silog': 100.0 * math.sqrt(max(0.0, self.log_err_sq / n - SILOG_LAMBDA * mean_e ** 2)),
            'pred_nan_fraction': self.n_pred_nan / n,
            'n_pixels': n,
        }


def metric_sums(pred_m: np.ndarray, gt_m: np.ndarray, valid: np.ndarray,
                min_depth_m: float, cap_m: float) -> MetricSums:
    """Clip a prediction and sum its metrics over ``valid`` pixels.

    Args:
        pred_m: Predicted depth [m], HxW.
        gt_m: GT depth [m], HxW.
        valid: bool HxW selection (a subset of :func:`valid_gt_mask`).
        min_depth_m: Lower limit [m].
        cap_m: Cap [m].

    Returns:
        The sums over the selected pixels.
    """
    pred = np.asarray(pred_m)[valid]
    return MetricSums.from_pixels(clip_prediction(pred, min_depth_m, cap_m),
                                  np.asarray(gt_m)[valid], np.isnan(pred))


def compute_metrics(pred_m: np.ndarray, gt_m: np.ndarray, *,
                    min_depth_m: float = DEFAULT_MIN_DEPTH_M,
                    cap_m: float = DEFAULT_CAP_M) -> dict[str, float | None]:
    """Compute the metrics of one frame (see the module docstring for the protocol).

    Args:
        pred_m: Predicted depth [m], HxW, at GT resolution.
        gt_m: GT depth [m], HxW; 0 / NaN invalid, +inf sky.
        min_depth_m: Exclusive lower GT limit and lower prediction clip [m].
        cap_m: Inclusive upper GT limit and upper prediction clip [m].

    Returns:
        ``METRIC_NAMES`` plus ``pred_nan_fraction`` and ``n_pixels``; metric values are None
        when the frame has no valid pixel.

    Raises:
        ValueError: On mismatched shapes or limits.
    """
    pred_m, gt_m = np.asarray(pred_m), np.asarray(gt_m)
    _check_shapes(pred_m, gt_m)
    _check_limits(min_depth_m, cap_m)
    valid = valid_gt_mask(gt_m, min_depth_m, cap_m)
    return metric_sums(pred_m, gt_m, valid, min_depth_m, cap_m).finalize()


def mask_counts(near: np.ndarray, gt_m: np.ndarray, anchor_m: float,
                min_depth_m: float = DEFAULT_MIN_DEPTH_M) -> tuple[int, int]:
    """Count correct near-mask pixels against ``1[g <= anchor_m]``.

    Args:
        near: Predicted near mask, bool HxW.
        gt_m: GT depth [m], HxW; scored where not NaN and ``> min_depth_m`` (+inf counts as far).
        anchor_m: Anchor depth [m].
        min_depth_m: Exclusive lower GT limit [m].

    Returns:
        ``(correct, scored)`` pixel counts.
    """
    near, gt_m = np.asarray(near, dtype=bool), np.asarray(gt_m)
    _check_shapes(near, gt_m)
    with np.errstate(invalid='ignore'):
        scored = ~np.isnan(gt_m) & (gt_m > min_depth_m)
        target = gt_m <= anchor_m
    return int(np.count_nonzero((near == target) & scored)), int(np.count_nonzero(scored))


def mask_accuracy(near: np.ndarray, gt_m: np.ndarray, anchor_m: float,
                  min_depth_m: float = DEFAULT_MIN_DEPTH_M) -> float | None:
    """Fraction of scored pixels where the near mask equals ``1[g <= anchor_m]``.

    Args:
        near: Predicted near mask, bool HxW.
        gt_m: GT depth [m], HxW.
        anchor_m: Anchor depth [m].
        min_depth_m: Exclusive lower GT limit [m].

    Returns:
        Accuracy in [0, 1], or None when no pixel is scored.
    """
    correct, scored = mask_counts(near, gt_m, anchor_m, min_depth_m)
    return correct / scored if scored else None


def scale_slope(gt_median_m: list[float], scale_ratio: list[float]) -> float | None:
    """Slope of ln median(prediction) on ln median(GT) over frames (least squares).

    Args:
        gt_median_m: Each frame's median valid GT depth [m].
        scale_ratio: Each frame's ``median(GT) / median(prediction)``.

    Returns:
        The slope (1: predictions follow each scene's depth; 0: one depth for every scene), or
        None with fewer than 3 frames or GT medians that (almost) do not differ.
    """
    if len(gt_median_m) < 3:
        return None
    log_gt = np.log(np.asarray(gt_median_m, np.float64))
    log_pred = log_gt - np.log(np.asarray(scale_ratio, np.float64))
    spread = log_gt - log_gt.mean()
    if float(np.dot(spread, spread)) < 1e-9 * len(spread):
        return None
    return float(np.dot(spread, log_pred - log_pred.mean()) / np.dot(spread, spread))


def curve_edges_m(min_depth_m: float, cap_m: float, bins: int = CURVE_BINS) -> np.ndarray:
    """Return geometric GT-depth bin edges [m] for the AbsRel-versus-depth curve."""
    lo = max(min_depth_m, min(0.1, cap_m / 100.0))
    return np.geomspace(lo, cap_m, bins + 1)


class MetricAggregator:
    """Accumulates one result (one anchor, the fusion, a bag topic) over frames.

    Args:
        min_depth_m: Exclusive lower GT limit and prediction clip [m].
        cap_m: Inclusive GT cap and prediction clip [m].
        anchor_m: Anchor of this result [m], needed to score near masks; None otherwise.
    """

    def __init__(self, *, min_depth_m: float = DEFAULT_MIN_DEPTH_M,
                 cap_m: float = DEFAULT_CAP_M, anchor_m: float | None = None) -> None:
        _check_limits(min_depth_m, cap_m)
        self.min_depth_m = float(min_depth_m)
        self.cap_m = float(cap_m)
        self.anchor_m = anchor_m
        self.per_frame: list[dict[str, float | None]] = []
        self.total = MetricSums()
        self.band_sums = {name: MetricSums() for name, _, _ in DEPTH_BANDS_M}
        self.band_frames = dict.fromkeys(self.band_sums, 0)
        self.mask_correct = 0
        self.mask_scored = 0
        self.edges_m = curve_edges_m(self.min_depth_m, self.cap_m)
        self.curve_abs_rel = np.zeros(len(self.edges_m) - 1)
        self.curve_count = np.zeros(len(self.edges_m) - 1, dtype=np.int64)

    def add(self, pred_m: np.ndarray, gt_m: np.ndarray,
            near: np.ndarray | None = None) -> dict[str, float | None]:
        """Score one frame and add it to every aggregate.

        Args:
            pred_m: Predicted depth [m], HxW at GT resolution.
            gt_m: GT depth [m], HxW.
            near: Optional predicted near mask (bool HxW); scored when ``anchor_m`` is set.

        Returns:
            This frame's metrics (see :func:`compute_metrics`), plus ``mask_accuracy`` when the
            mask is scored.
        """
        pred_m, gt_m = np.asarray(pred_m), np.asarray(gt_m)
        _check_shapes(pred_m, gt_m)
        valid = valid_gt_mask(gt_m, self.min_depth_m, self.cap_m)
        gt_valid = gt_m[valid].astype(np.float64)
        nan_valid = np.isnan(pred_m[valid])
        pred_valid = clip_prediction(pred_m[valid], self.min_depth_m, self.cap_m)
        frame = MetricSums.from_pixels(pred_valid, gt_valid, nan_valid)
        self.total = self.total + frame
        result = frame.finalize()
        result['scale_ratio'] = result['delta1_aligned'] = result['gt_median_m'] = None
        measured = ~nan_valid  # the scale is that of the predicted pixels; NaN stays wrong
        if measured.any():
            gt_median_m = float(np.median(gt_valid[measured]))
            scale = gt_median_m / float(np.median(pred_valid[measured]))
            result['scale_ratio'] = scale
            result['gt_median_m'] = gt_median_m
            aligned = np.where(measured, scale * pred_valid, self.min_depth_m)
            result['delta1_aligned'] = MetricSums.from_pixels(aligned, gt_valid).finalize()[
                'delta1']
        for name, lo, hi in DEPTH_BANDS_M:
            in_band = (gt_valid > lo) & (gt_valid <= hi)
            if np.any(in_band):
                self.band_sums[name] = self.band_sums[name] + MetricSums.from_pixels(
                    pred_valid[in_band], gt_valid[in_band], nan_valid[in_band])
                self.band_frames[name] += 1
        if gt_valid.size:
            index = np.clip(np.searchsorted(self.edges_m, gt_valid, side='right') - 1,
                            0, len(self.curve_count) - 1)
            np.add.at(self.curve_abs_rel, index, np.abs(pred_valid - gt_valid) / gt_valid)
            np.add.at(self.curve_count, index, 1)
        if near is not None and self.anchor_m is not None:
            correct, scored = mask_counts(near, gt_m, self.anchor_m, self.min_depth_m)
            self.mask_correct += correct
            self.mask_scored += scored
            result['mask_accuracy'] = correct / scored if scored else None
        self.per_frame.append(result)
        return result

    @property
    def frames(self) -> int:
        """Number of frames added."""
        return len(self.per_frame)

    def frame_mean(self) -> dict[str, float | None]:
        """Mean over frames with valid pixels of each per-frame value (the headline numbers).

        Returns:
            ``METRIC_NAMES``, ``pred_nan_fraction``, ``delta1_aligned`` and (if scored)
            ``mask_accuracy`` averaged over frames (None if no frame had valid pixels),
            ``scale_error`` (``exp`` of the mean ``|ln scale_ratio|``), ``scale_slope`` (see the
            module docstring), plus ``n_frames`` (frames with valid pixels) and ``n_pixels``
            (all valid pixels).
        """
        scored = [f for f in self.per_frame if f['n_pixels']]
        keys = [*METRIC_NAMES, 'pred_nan_fraction']
        out: dict[str, float | None] = {
            key: (float(np.mean([f[key] for f in scored])) if scored else None) for key in keys}
        scaled = [f for f in scored if f['scale_ratio'] is not None]  # not all NaN
        out['delta1_aligned'] = (float(np.mean([f['delta1_aligned'] for f in scaled]))
                                 if scaled else None)
        out['scale_error'] = (float(np.exp(np.mean([abs(math.log(f['scale_ratio']))
                                                    for f in scaled]))) if scaled else None)
        out['scale_slope'] = scale_slope([f['gt_median_m'] for f in scaled],
                                         [f['scale_ratio'] for f in scaled])
        masks = [f['mask_accuracy'] for f in self.per_frame if f.get('mask_accuracy') is not None]
        if masks:
            out['mask_accuracy'] = float(np.mean(masks))
        out['n_frames'] = len(scored)
        out['n_pixels'] = self.total.n
        return out

    def pixel_mean(self) -> dict[str, float | None]:
        """Metrics of all valid pixels of all frames pooled as one set (plus pooled mask accuracy).

        Returns:
            As :meth:`MetricSums.finalize`, plus ``mask_accuracy`` when masks were scored.
        """
        out = self.total.finalize()
        if self.mask_scored:
            out['mask_accuracy'] = self.mask_correct / self.mask_scored
        return out

    def mask_accuracy(self) -> float | None:
        """Mean over frames of the per-frame mask accuracy, or None if no mask was scored."""
        return self.frame_mean().get('mask_accuracy')

    def bands(self) -> dict[str, dict[str, float | None]]:
        """Pixel-pooled metrics per GT depth band, each with ``n_pixels`` and ``n_frames``."""
        out = {}
        for name, _, _ in DEPTH_BANDS_M:
            band = self.band_sums[name].finalize()
            band['n_frames'] = self.band_frames[name]
            out[name] = band
        return out

    def abs_rel_curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pooled AbsRel per geometric GT-depth bin.

        Returns:
            ``(centres_m, abs_rel, counts)``: geometric bin centres [m], mean AbsRel (NaN for
            empty bins) and pixel counts.
        """
        centres = np.sqrt(self.edges_m[:-1] * self.edges_m[1:])
        with np.errstate(invalid='ignore', divide='ignore'):
            mean = np.where(self.curve_count > 0, self.curve_abs_rel / self.curve_count, np.nan)
        return centres, mean, self.curve_count.copy()
