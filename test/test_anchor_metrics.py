"""Anchor consistency and far (sky) decisions: exact values on constructed predictions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from metric_solver_ros import eval_report, evaluation
from metric_solver_ros.anchor_metrics import (
    FAR_LIMITS_M,
    AnchorConsistency,
    FarDecisions,
    frame_anchor_spread,
)


def _gt() -> np.ndarray:
    """1.5 m (band 0-2) on the left half, 8 m (band 5-10) on the right, two invalid pixels."""
    gt = np.full((4, 6), 1.5, np.float32)
    gt[:, 3:] = 8.0
    gt[0, 0] = np.nan
    gt[0, 1] = 0.0
    return gt


def test_the_same_depth_at_every_anchor_is_perfectly_consistent():
    gt = _gt()
    frame = frame_anchor_spread({2.0: gt * 1.3, 10.0: gt * 1.3}, gt, min_depth_m=1e-3, cap_m=10)
    assert frame['scale_spread'] == pytest.approx(1.0)
    assert frame['pixel_log_spread'] == pytest.approx(0.0)
    assert set(frame['bands']) == {'0-2', '5-10'}


def test_a_rescaled_anchor_gives_its_scale_as_spread_overall_and_per_band():
    gt = _gt()
    # anchor 40 sees the near band twice as far, the far band the same.
    far_view = np.where(gt < 2, 2 * gt, gt)
    frame = frame_anchor_spread({2.0: gt, 10.0: gt, 40.0: far_view}, gt, min_depth_m=1e-3,
                                cap_m=10)
    assert frame['bands']['0-2']['scale_spread'] == pytest.approx(2.0)
    assert frame['bands']['0-2']['pixel_log_spread'] == pytest.approx(math.log(2.0))
    assert frame['bands']['5-10']['scale_spread'] == pytest.approx(1.0)
    # 10 near pixels (2 invalid of 12) and 12 far ones: the median pixel is a far one.
    assert frame['pixel_log_spread'] == pytest.approx(0.0)
    # medians over all valid pixels: 8 m for anchors 2 and 10; for 40: sorted values
    # 3 (x10), 8 (x12): the median (22 values) is 8.
    assert frame['scale_spread'] == pytest.approx(1.0)


def test_nan_pixels_are_left_out_and_inf_counts_as_the_cap():
    gt = np.full((2, 2), 5.0, np.float32)
    a = np.full((2, 2), 5.0, np.float32)
    b = np.array([[np.inf, np.nan], [5.0, 5.0]], np.float32)
    frame = frame_anchor_spread({1.0: a, 3.0: b}, gt, min_depth_m=1e-3, cap_m=10)
    # pixels used: (0,0) 5 vs 10 (inf -> cap), (1,0), (1,1) equal: median spread 0.
    assert frame['pixel_log_spread'] == pytest.approx(0.0)
    assert frame['scale_spread'] == pytest.approx(1.0)
    assert frame_anchor_spread({1.0: a}, gt, min_depth_m=1e-3, cap_m=10) is None


def test_consistency_means_over_frames():
    gt = _gt()
    agg = AnchorConsistency(min_depth_m=1e-3, cap_m=20)  # 1.5 x 8 m stays below the cap
    agg.add({1.0: gt, 3.0: gt}, gt)
    agg.add({1.0: gt, 3.0: 1.5 * gt}, gt)
    agg.add({1.0: np.full_like(gt, np.nan), 3.0: gt}, gt)  # nothing to compare: skipped
    summary = agg.summary()
    assert summary['anchors_m'] == [1.0, 3.0]
    assert summary['frames'] == 2
    assert summary['scale_spread'] == pytest.approx(1.25)
    assert summary['pixel_log_spread'] == pytest.approx(math.log(1.5) / 2)
    assert summary['bands']['0-2']['frames'] == 2
    assert '>80' not in summary['bands']


def test_far_decisions_count_sky_and_lost_surfaces_on_the_curve():
    gt = np.array([[np.inf, np.inf, np.inf, np.inf], [5.0, 50.0, 0.0, np.nan]], np.float32)
    pred = np.array([[np.inf, 90.0, 60.0, np.nan], [np.inf, 120.0, np.inf, np.inf]], np.float32)
    far = FarDecisions(min_depth_m=1e-3)
    far.add(pred, gt)
    s = far.summary()
    assert (s['sky_pixels'], s['surface_pixels']) == (4, 2)
    assert s['sky_as_inf'] == pytest.approx(0.25)
    assert s['sky_beyond_far'] == pytest.approx(0.5)  # inf and 90 m beyond 80 m
    assert s['surface_as_inf'] == pytest.approx(0.5)  # the 5 m surface said +inf
    curve = dict(zip(s['curve']['far_limit_m'], s['curve']['surface_beyond'], strict=True))
    assert curve[100.0] == pytest.approx(1.0) and curve[150.0] == pytest.approx(0.5)
    assert s['curve']['far_limit_m'][-1] is None and len(s['curve']['sky_beyond']) == len(
        FAR_LIMITS_M)
    assert FarDecisions(min_depth_m=1e-3).summary()['sky_as_inf'] is None


def test_evaluate_reports_consistency_and_far_decisions_in_json_and_report(tmp_path):
    gt = _gt()
    gt[1, 0] = np.inf

    def predictor(frame):
        # anchor 2 sees everything 1.2x too far; anchor 10 exact.
        return {'anchor=2': evaluation.Prediction(1.2 * gt, None, 2.0),
                'anchor=10': evaluation.Prediction(gt.copy(), None, 10.0)}

    frames = [evaluation.EvalFrame(i, np.zeros((*gt.shape, 3), np.uint8), gt, name=str(i))
              for i in range(3)]
    result = evaluation.evaluate(frames, predictor, cap_m=10.0, examples=0)
    paths = eval_report.write_outputs(result, tmp_path)
    data = json.loads(paths['json'].read_text())
    consistency = data['anchor_consistency']
    assert consistency['anchors_m'] == [2.0, 10.0] and consistency['frames'] == 3
    assert consistency['scale_spread'] == pytest.approx(1.2, rel=1e-5)
    assert data['far_decisions']['anchor=10']['sky_as_inf'] == 1.0
    # at a lower resolution the +inf sky survives the resize (nearest neighbour)
    low = evaluation.evaluate(frames, lambda f: {'low': evaluation.Prediction(
        np.full((2, 3), np.inf, np.float32))}, cap_m=10.0, examples=0)
    assert low.to_json()['far_decisions']['low']['sky_as_inf'] == 1.0
    report = paths['report'].read_text()
    assert '## Anchor consistency' in report and '## Far decisions (sky)' in report

    single = evaluation.evaluate(frames, lambda f: {'x': evaluation.Prediction(gt)}, cap_m=10.0,
                                 examples=0)
    assert 'anchor_consistency' not in single.to_json()
