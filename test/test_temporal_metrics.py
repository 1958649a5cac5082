"""Temporal metrics on constructed frames whose answers are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metric_solver_ros import temporal_metrics as tm

LIMITS = {'min_depth_m': 1e-3, 'cap_m': 80.0}
K = (40.0, 40.0, 23.5, 17.5)  # fx, fy, cx, cy [px] of a 48 x 36 image
SHAPE = (36, 48)


def _pose(x=0.0, y=0.0, z=0.0, yaw_rad=0.0):
    """Camera-to-world pose: a translation [m] and a turn about the camera's y axis."""
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    pose = np.eye(4)
    pose[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    pose[:3, 3] = (x, y, z)
    return pose


def _wall(depth_m):
    return np.full(SHAPE, depth_m, np.float32)


def test_log_scale_ratio_and_scale_jitter():
    gt = np.random.default_rng(0).uniform(1, 9, SHAPE).astype(np.float32)
    assert tm.log_scale_ratio(gt * np.float32(1.1), gt, **LIMITS) == pytest.approx(math.log(1.1),
                                                                                  abs=1e-6)
    assert tm.log_scale_ratio(np.full(SHAPE, np.nan), gt, **LIMITS) is None
    series = tm.TemporalSeries(**LIMITS)
    wobble = [0.1, -0.1, 0.1, -0.1, 0.1, -0.1]
    for s in wobble:  # a constant bias of 1.2x does not count, the wobble does
        series.add(gt * np.float32(1.2 * math.exp(s)), gt)
    summary = series.summary()
    assert summary['scale_jitter'] == pytest.approx(0.1, abs=1e-5)
    assert summary['scale_step'] == pytest.approx(0.2, abs=1e-5)
    assert summary['frames'] == 6 and summary['warped_error'] is None
    assert summary['warped_pairs'] == 0 and len(summary['flicker_per_pair']) == 5


def test_flicker_counts_static_pixels_only():
    rng = np.random.default_rng(1)
    gt0 = rng.uniform(1, 9, SHAPE).astype(np.float32)
    gt1 = gt0.copy()
    gt1[:10] *= 0.5  # something moved in the top rows: not static
    gt0[-6:], gt1[-6:] = np.nan, np.nan  # a GT hole in the bottom rows
    pred0 = np.where(np.isnan(gt0), 3.0, gt0).astype(np.float32)
    pred1 = pred0 * np.float32(math.exp(0.05))  # every pixel moves by 0.05 in ln...
    pred1[-6:] *= np.float32(math.exp(0.5))  # ...the hole by 0.55
    pred1[:10] = gt1[:10]  # the moving part follows its GT (a change of ln 2)
    static = tm.static_pixels(gt0, gt1, camera_still=False, **LIMITS)
    assert not static[:10].any() and not static[-6:].any() and static[10:-6].all()
    assert tm.flicker(pred0, pred1, static, **LIMITS) == pytest.approx(0.05, abs=1e-5)
    # A still camera: the hole counts too (median over 20 rows at 0.05 and 6 at 0.55).
    still = tm.static_pixels(gt0, gt1, camera_still=True, **LIMITS)
    assert still[-6:].all() and not still[:10].any()
    share = tm.flicker(pred0, pred1, still, **LIMITS)
    assert share == pytest.approx(0.05, abs=1e-5)  # the median is still the majority's
    pred1[10:-6:2] *= np.float32(math.exp(0.5))  # now most of the counted pixels change by 0.55
    assert tm.flicker(pred0, pred1, still, **LIMITS) == pytest.approx(0.55, abs=1e-4)
    assert tm.flicker(pred0, pred1, np.zeros(SHAPE, bool), **LIMITS) is None


def test_series_uses_poses_before_the_users_static_camera():
    gt = np.full(SHAPE, np.nan, np.float32)  # no GT at all: only a still camera gives pixels
    gt[0, 0] = 2.0  # (one valid pixel so that the scale ratio is defined)
    pred = [np.full(SHAPE, 2.0, np.float32), np.full(SHAPE, 2.0 * math.exp(0.3), np.float32)]
    pred[1][0, 0] = 2.0 * math.exp(0.1)  # the GT pixel changes by 0.1, the holes by 0.3
    user = tm.TemporalSeries(static_camera=True, **LIMITS)
    for p in pred:
        user.add(p, gt)
    assert user.summary()['flicker'] == pytest.approx(0.3, abs=1e-6)
    assert user.summary()['still_camera_from'] == 'user'
    moved = tm.TemporalSeries(static_camera=True, **LIMITS)
    for p, pose in zip(pred, (_pose(), _pose(z=0.5)), strict=True):
        moved.add(p, gt, pose, K)
    summary = moved.summary()
    assert summary['still_camera_from'] == 'poses'
    assert summary['flicker_per_pair'] == [pytest.approx(0.1, abs=1e-6)]  # the GT pixel only
    assert tm.still_camera(_pose(), _pose(x=0.005, yaw_rad=0.001))
    assert not tm.still_camera(_pose(), _pose(yaw_rad=0.02))


def test_warped_error_forward_motion_in_closed_form():
    """A wall 5 m ahead; the camera moves 1 m towards it: the wall is at 4 m in frame 1."""
    gt0, gt1 = _wall(5.0), _wall(4.0)
    poses = (_pose(), _pose(z=1.0))
    exact = tm.warped_error(gt0, gt1, gt0, gt1, *poses, K, **LIMITS)
    assert exact == pytest.approx(0.0, abs=1e-6)
    # Frame 0 predicted 10 % too far: it implies 5.5 - 1 = 4.5 m where frame 1 says 4 m.
    wrong = tm.warped_error(gt0 * np.float32(1.1), gt1, gt0, gt1, *poses, K, **LIMITS)
    assert wrong == pytest.approx(math.log(4.5 / 4.0), abs=1e-5)
    # The same scale error in both frames still shows: metric motion does not scale.
    both = tm.warped_error(gt0 * np.float32(1.1), gt1 * np.float32(1.1), gt0, gt1, *poses, K,
                           **LIMITS)
    assert both == pytest.approx(math.log(4.5 / 4.4), abs=1e-5)


def test_warped_error_sideways_motion_and_turn():
    gt = _wall(5.0)
    for pose in (_pose(x=0.5), _pose(yaw_rad=0.05)):
        gt1 = gt
        if pose[0, 2] != 0:  # a turned camera sees the wall obliquely: exact GT by ray casting
            rows, cols = np.mgrid[0:SHAPE[0], 0:SHAPE[1]].astype(np.float64)
            ray = np.stack([(cols - K[2]) / K[0], (rows - K[3]) / K[1], np.ones(SHAPE)])
            world_z = np.einsum('ij,jhw->ihw', pose[:3, :3], ray)[2]
            gt1 = (5.0 / world_z).astype(np.float32)  # planar depth of the hit on z = 5
        # (Landing pixels are rounded: the oblique wall's depth changes 0.1 % a pixel.)
        assert tm.warped_error(gt, gt1, gt, gt1, _pose(), pose, K, **LIMITS) == \
            pytest.approx(0.0, abs=1e-3)
        assert tm.warped_error(gt, gt1 * np.float32(1.05), gt, gt1, _pose(), pose, K,
                               **LIMITS) == pytest.approx(math.log(1.05), abs=1e-3)
    # Nothing in view of both frames: no value.
    assert tm.warped_error(gt, gt, gt, gt, _pose(), _pose(z=-10.0, yaw_rad=math.pi), K,
                           **LIMITS) is None


def test_series_over_a_posed_sequence():
    series = tm.TemporalSeries(**LIMITS)
    for i in range(4):
        gt = _wall(6.0 - i)
        series.add(gt * np.float32(1.0 + 0.1 * (i % 2)), gt, _pose(z=float(i)), K)
    summary = series.summary()
    assert summary['warped_pairs'] == 3 and summary['still_camera_from'] == 'poses'
    assert summary['warped_error'] > 0.05 and summary['static_fraction'] == 0.0
    assert summary['flicker'] is None  # the camera moved and every GT pixel changed
