"""The paper's depth metrics on constructed cases with hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metric_solver_ros.metrics import (
    DEPTH_BANDS_M,
    METRIC_NAMES,
    MetricAggregator,
    MetricSums,
    clip_prediction,
    compute_metrics,
    mask_accuracy,
    suggested_cap_m,
    valid_gt_mask,
)


def _gt(shape=(6, 8), seed=0, lo=0.5, hi=9.0):
    return np.random.default_rng(seed).uniform(lo, hi, shape)


@pytest.mark.parametrize('dtype', [np.float64, np.float32])
def test_gt_times_1_1_gives_abs_rel_0_1_and_delta1_1(dtype):
    gt = _gt().astype(dtype)
    m = compute_metrics(gt * dtype(1.1), gt, cap_m=10.0)
    tol = 1e-12 if dtype == np.float64 else 1e-6
    assert m['abs_rel'] == pytest.approx(0.1, abs=tol)
    assert m['delta1'] == 1.0 and m['delta2'] == 1.0 and m['delta3'] == 1.0
    assert m['log10'] == pytest.approx(math.log10(1.1), abs=tol)
    assert m['silog'] == pytest.approx(0.0, abs=1e-3)  # a pure scale error is scale-invariant
    assert m['rmse'] == pytest.approx(0.1 * math.sqrt(np.mean(gt.astype(np.float64) ** 2)),
                                      rel=1e-6)
    assert m['n_pixels'] == gt.size and m['pred_nan_fraction'] == 0.0


def test_gt_times_1_3_fails_delta1_passes_delta2():
    gt = _gt(hi=7.0)  # x 1.3 stays below the cap
    m = compute_metrics(gt * 1.3, gt, cap_m=10.0)
    assert m['delta1'] == 0.0
    assert m['delta2'] == 1.0 and m['delta3'] == 1.0
    assert m['abs_rel'] == pytest.approx(0.3, abs=1e-12)
    # Under-prediction by the same ratio is symmetric for delta (max(p/g, g/p)).
    assert compute_metrics(gt / 1.3, gt, cap_m=10.0)['delta1'] == 0.0


def test_hand_computed_values():
    gt = np.array([[1.0, 2.0], [4.0, 8.0]])
    pred = np.array([[2.0, 2.0], [2.0, 8.0]])
    m = compute_metrics(pred, gt, cap_m=10.0)
    # ratios 2, 1, 2, 1: 2 > 1.25**3 = 1.953125 fails every threshold.
    assert m['delta1'] == m['delta2'] == m['delta3'] == 0.5
    assert m['abs_rel'] == pytest.approx((1 / 1 + 0 + 2 / 4 + 0) / 4)            # 0.375
    assert m['sq_rel'] == pytest.approx((1 / 1 + 0 + 4 / 4 + 0) / 4)             # 0.5
    assert m['rmse'] == pytest.approx(math.sqrt((1 + 0 + 4 + 0) / 4))             # 1.1180
    assert m['rmse_log'] == pytest.approx(math.log(2) / math.sqrt(2))             # 0.4901
    assert m['log10'] == pytest.approx(2 * math.log10(2) / 4)                     # 0.1505
    # e = (ln2, 0, -ln2, 0): mean 0, mean square ln2^2 / 2.
    assert m['silog'] == pytest.approx(100 * math.log(2) / math.sqrt(2))          # 49.013
    assert m['silog'] == pytest.approx(49.0129, abs=1e-4)


def test_silog_subtracts_the_squared_mean_with_lambda_1():
    gt = np.array([[1.0, 1.0, 1.0, 1.0]])
    pred = np.array([[1.0, 1.0, math.e, math.e]])  # e = (0, 0, 1, 1)
    m = compute_metrics(pred, gt, cap_m=10.0)
    assert m['silog'] == pytest.approx(100 * math.sqrt(0.5 - 0.25))                # 50.0


def test_valid_gt_excludes_zero_nan_inf_below_min_and_above_cap():
    gt = np.array([[0.0, np.nan, np.inf, 5e-4, 3.0, 10.0, 10.5, -1.0]])
    assert valid_gt_mask(gt, 1e-3, 10.0).tolist() == [
        [False, False, False, False, True, True, False, False]]
    pred = np.full_like(gt, 3.0)
    m = compute_metrics(pred, gt, min_depth_m=1e-3, cap_m=10.0)
    assert m['n_pixels'] == 2
    assert m['abs_rel'] == pytest.approx((0 + 7 / 10) / 2)


def test_suggested_cap_is_indoor_while_at_most_5_percent_of_the_gt_is_beyond_10_m():
    room = np.full(100, 4.0)
    room[:5] = 12.0  # 5 % beyond 10 m: still indoors
    gt = np.concatenate([room, [0.0, np.nan, 5e-4]])  # no GT, not counted
    assert suggested_cap_m(gt) == (10.0, 0.05)
    room[5] = np.inf  # +inf (too far) is beyond any cap: 6 %
    assert suggested_cap_m(room) == (80.0, pytest.approx(0.06))
    assert suggested_cap_m(np.array([[0.0, np.nan]])) is None


def test_predictions_clip_to_min_and_cap_and_nan_counts_as_wrong():
    assert clip_prediction(np.array([np.inf, -np.inf, np.nan, 0.0, 100.0, 5.0]), 0.1,
                           10.0).tolist() == [10.0, 0.1, 0.1, 0.1, 10.0, 5.0]
    gt = np.array([[10.0, 10.0, 5.0, 5.0]])
    pred = np.array([[np.inf, 50.0, np.nan, 5.0]])
    m = compute_metrics(pred, gt, min_depth_m=0.1, cap_m=10.0)
    # inf and 50 become the cap 10 (exact); NaN becomes 0.1 (ratio 50: wrong).
    assert m['delta1'] == 0.75
    assert m['abs_rel'] == pytest.approx((0 + 0 + 4.9 / 5 + 0) / 4)
    assert m['pred_nan_fraction'] == 0.25


def test_no_valid_pixel_gives_none_and_is_skipped_by_frame_mean():
    gt_empty = np.full((2, 2), np.nan)
    m = compute_metrics(np.ones((2, 2)), gt_empty, cap_m=10.0)
    assert m['n_pixels'] == 0 and all(m[k] is None for k in METRIC_NAMES)
    agg = MetricAggregator(cap_m=10.0)
    agg.add(np.ones((2, 2)), gt_empty)
    agg.add(np.full((2, 2), 2.2), np.full((2, 2), 2.0))
    assert agg.frame_mean()['abs_rel'] == pytest.approx(0.1)
    assert agg.frame_mean()['n_frames'] == 1 and agg.frames == 2


def test_shape_and_limit_errors():
    with pytest.raises(ValueError, match='same shape'):
        compute_metrics(np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(ValueError, match='min_depth'):
        compute_metrics(np.ones((2, 2)), np.ones((2, 2)), min_depth_m=5.0, cap_m=2.0)


def test_frame_mean_and_pixel_mean_differ_as_defined():
    agg = MetricAggregator(cap_m=10.0)
    agg.add(np.array([[3.0]]), np.array([[2.0]]))                  # 1 px, abs_rel 0.5, err 1 m
    agg.add(np.full((1, 3), 4.0), np.full((1, 3), 4.0))            # 3 px, exact
    frame, pixel = agg.frame_mean(), agg.pixel_mean()
    assert frame['abs_rel'] == pytest.approx(0.25)
    assert pixel['abs_rel'] == pytest.approx(0.125)
    assert frame['rmse'] == pytest.approx(0.5)                     # mean of 1 and 0
    assert pixel['rmse'] == pytest.approx(math.sqrt(1 / 4))        # pooled
    assert frame['delta1'] == pytest.approx(0.5) and pixel['delta1'] == pytest.approx(0.75)
    assert pixel['n_pixels'] == 4 and frame['n_frames'] == 2
    assert [f['n_pixels'] for f in agg.per_frame] == [1, 3]


def test_median_scaling_separates_scale_from_structure():
    agg = MetricAggregator(cap_m=100.0)
    gt = _gt()
    twice = agg.add(gt * 2.0, gt)  # right structure, twice too far
    assert twice['delta1'] == 0.0 and twice['delta1_aligned'] == 1.0
    assert twice['scale_ratio'] == pytest.approx(0.5)
    half = agg.add(gt * 0.5, gt)
    assert half['scale_ratio'] == pytest.approx(2.0) and half['delta1_aligned'] == 1.0
    mean = agg.frame_mean()
    assert mean['scale_error'] == pytest.approx(2.0)  # each frame 2x off, opposite ways
    assert mean['delta1_aligned'] == 1.0 and mean['delta1'] == 0.0
    # Hand-computed: GT 1, 2, 4, 8; prediction 3, 3, 3, 3 (median 3, GT median 3 -> scale 1).
    gt4 = np.array([[1.0, 2.0], [4.0, 8.0]])
    m = MetricAggregator(cap_m=10.0).add(np.full((2, 2), 3.0), gt4)
    assert m['scale_ratio'] == pytest.approx(1.0)
    assert m['delta1_aligned'] == m['delta1'] == 0.0  # ratios 3, 1.5, 1.33, 2.67
    # A constant prediction scaled to the median: only the GT pixels near the median pass.
    m = MetricAggregator(cap_m=10.0).add(np.full((2, 2), 6.0), np.array([[2.0, 2.9], [3.1, 8.0]]))
    assert m['scale_ratio'] == pytest.approx(0.5) and m['delta1_aligned'] == 0.5


def test_scale_slope_measures_whether_predictions_follow_the_scene_depth():
    gt = np.array([[1.0, 2.0], [3.0, 4.0]])  # median 2.5
    scenes = (0.5, 1.0, 2.0, 3.0)  # four scenes: the same layout at these scales

    def slope(predict) -> float | None:
        agg = MetricAggregator(cap_m=100.0)
        for k in scenes:
            agg.add(predict(k * gt), k * gt)
        return agg.frame_mean()['scale_slope']

    assert slope(lambda g: 1.7 * g) == pytest.approx(1.0)  # follows the scene (scale off)
    assert slope(lambda g: np.full_like(g, 4.0)) == pytest.approx(0.0, abs=1e-12)  # one depth
    # halfway: median(sqrt(k g)) = sqrt(k) median(sqrt(g)), so ln median(p) = 0.5 ln k + c
    assert slope(lambda g: g ** 0.5) == pytest.approx(0.5)
    # undefined: fewer than 3 frames, or scenes whose GT medians are all the same
    agg = MetricAggregator(cap_m=100.0)
    agg.add(gt, gt)
    agg.add(gt * 2, gt * 2)
    assert agg.frame_mean()['scale_slope'] is None
    same = MetricAggregator(cap_m=100.0)
    for k in (1.0, 2.0, 3.0):
        same.add(k * gt, gt)
    assert same.frame_mean()['scale_slope'] is None


def test_scale_diagnostics_use_the_predicted_pixels_only():
    # A sensor-like prediction: exact where measured, NaN (a hole) on 60 % of the pixels. The
    # scale is right (1); NaN pixels still count as wrong in delta1 and delta1_aligned.
    agg = MetricAggregator(cap_m=100.0)
    for k in (1.0, 2.0, 4.0):
        gt = k * np.arange(1.0, 11.0).reshape(2, 5)
        pred = gt.copy()
        pred.flat[:6] = np.nan
        frame = agg.add(pred, gt)
        assert frame['scale_ratio'] == pytest.approx(1.0)
        assert frame['delta1'] == frame['delta1_aligned'] == pytest.approx(0.4)
    mean = agg.frame_mean()
    assert mean['scale_error'] == pytest.approx(1.0) and mean['scale_slope'] == pytest.approx(1.0)
    only_holes = agg.add(np.full((2, 5), np.nan), np.ones((2, 5)))
    assert only_holes['scale_ratio'] is None and only_holes['delta1'] == 0.0
    assert agg.frame_mean()['scale_error'] == pytest.approx(1.0)


def test_min_depth_must_be_positive():
    with pytest.raises(ValueError, match='need 0 < min_depth'):
        MetricAggregator(min_depth_m=0.0, cap_m=10.0)


def test_scale_diagnostics_are_none_without_valid_pixels():
    agg = MetricAggregator(cap_m=10.0)
    frame = agg.add(np.ones((2, 2)), np.full((2, 2), np.inf))
    assert frame['scale_ratio'] is None and frame['delta1_aligned'] is None
    assert agg.frame_mean()['scale_error'] is None and agg.frame_mean()['delta1_aligned'] is None


def test_bands_split_gt_by_lo_exclusive_hi_inclusive():
    gt = np.array([[1.0, 2.0, 2.5, 5.0, 7.0, 15.0, 30.0, 90.0]])
    pred = gt * 1.1
    pred[0, 6] = 60.0                                               # band 20-80: abs_rel 1.0
    agg = MetricAggregator(cap_m=100.0)
    agg.add(pred, gt)
    bands = agg.bands()
    assert list(bands) == [name for name, _, _ in DEPTH_BANDS_M]
    counts = {name: band['n_pixels'] for name, band in bands.items()}
    assert counts == {'0-2': 2, '2-5': 2, '5-10': 1, '10-20': 1, '20-80': 1, '>80': 1}
    assert bands['0-2']['abs_rel'] == pytest.approx(0.1)
    assert bands['20-80']['abs_rel'] == pytest.approx(1.0)
    assert bands['20-80']['delta1'] == 0.0 and bands['>80']['delta1'] == 1.0
    assert bands['5-10']['n_frames'] == 1
    agg.add(np.full((1, 1), 1.0), np.full((1, 1), 1.0))
    assert agg.bands()['0-2']['n_frames'] == 2 and agg.bands()['>80']['n_frames'] == 1


def test_capped_band_is_empty():
    agg = MetricAggregator(cap_m=80.0)
    agg.add(np.full((1, 2), 90.0), np.array([[90.0, 50.0]]))
    assert agg.bands()['>80']['n_pixels'] == 0 and agg.bands()['>80']['abs_rel'] is None
    assert agg.bands()['20-80']['n_pixels'] == 1


def test_mask_accuracy_against_gt_below_anchor_including_sky():
    gt = np.array([[1.0, 3.0, np.inf, np.nan, 0.0, 100.0]])
    near = np.array([[True, True, False, True, True, False]])
    # scored: 1 (near, right), 3 (near, wrong), inf (far, right), 100 (far, right).
    assert mask_accuracy(near, gt, anchor_m=2.0) == pytest.approx(3 / 4)
    assert mask_accuracy(near, np.full((1, 6), np.nan), anchor_m=2.0) is None
    agg = MetricAggregator(cap_m=10.0, anchor_m=2.0)
    record = agg.add(np.ones_like(gt), gt, near)
    assert record['mask_accuracy'] == pytest.approx(0.75)
    agg.add(np.ones((1, 2)), np.array([[1.0, 5.0]]), np.array([[True, False]]))
    assert agg.mask_accuracy() == pytest.approx((0.75 + 1.0) / 2)
    assert agg.pixel_mean()['mask_accuracy'] == pytest.approx(5 / 6)
    # Without an anchor the mask is not scored.
    assert 'mask_accuracy' not in MetricAggregator(cap_m=10.0).add(np.ones_like(gt), gt, near)


def test_abs_rel_curve_bins_pixels_by_gt_depth():
    agg = MetricAggregator(cap_m=10.0)
    gt = np.array([[0.5, 0.5, 8.0]])
    agg.add(np.array([[0.55, 0.55, 8.0]]), gt)
    centres, abs_rel, counts = agg.abs_rel_curve()
    assert np.all(np.diff(centres) > 0) and agg.edges_m[-1] == pytest.approx(10.0)
    near_bin = np.searchsorted(agg.edges_m, 0.5, side='right') - 1
    far_bin = np.searchsorted(agg.edges_m, 8.0, side='right') - 1
    assert counts[near_bin] == 2 and counts[far_bin] == 1 and counts.sum() == 3
    assert abs_rel[near_bin] == pytest.approx(0.1) and abs_rel[far_bin] == pytest.approx(0.0)
    assert np.isnan(abs_rel[counts == 0]).all()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.floats(0.1, 50.0), st.floats(0.1, 50.0)), min_size=2, max_size=30),
       st.integers(1, 29))
def test_sums_pool_exactly(pairs, split):
    pred = np.array([p for p, _ in pairs])
    gt = np.array([g for _, g in pairs])
    split = min(split, len(pairs) - 1)
    whole = MetricSums.from_pixels(pred, gt).finalize()
    parts = (MetricSums.from_pixels(pred[:split], gt[:split])
             + MetricSums.from_pixels(pred[split:], gt[split:])).finalize()
    for key in METRIC_NAMES:
        assert parts[key] == pytest.approx(whole[key], rel=1e-9, abs=1e-9)
