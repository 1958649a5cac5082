"""The node's stream corrections without rclpy: scale handover and temporal filter."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from metric_solver_ros.depth_stream import DepthStream
from metric_solver_ros.engine import DepthResult


def _result(depth_m, points=True):
    depth = np.asarray(depth_m, np.float32)
    xyz = None
    if points:
        v, u = np.mgrid[0:depth.shape[0], 0:depth.shape[1]].astype(np.float32)
        xyz = np.stack([(u - 1) / 10 * depth, (v - 1) / 10 * depth, depth], -1)
    return DepthResult(depth_m=depth, near=np.ones(depth.shape, bool), anchors_m=(10.0,),
                       anchor_index=None, points_m=xyz, points_rgb=None, timings_ms={})


def test_nothing_to_correct_publishes_the_result_itself():
    stream = DepthStream('off')
    result = _result(np.full((3, 4), 5.0))
    assert stream.correct(result, 'cam', 1, (10.0,), lambda a: None) is result


def test_an_auto_switch_hands_over_the_scale_and_moves_the_points():
    stream = DepthStream('off')
    stream.anchor_switched(10.0)
    new = _result(np.full((3, 4), 4.0))
    asked = []

    def decode_at(anchor_m):
        asked.append(anchor_m)
        return np.full((3, 4), 5.0, np.float32)  # the old anchor saw the frame at 5 m

    out = stream.correct(new, 'cam', 1, (20.0,), decode_at)
    assert asked == [10.0]
    assert np.allclose(out.depth_m, 5.0)
    assert np.allclose(out.points_m[..., 2], 5.0)  # along the rays: z follows the depth
    assert np.allclose(out.points_m[..., 0] / out.points_m[..., 2],
                       new.points_m[..., 0] / new.points_m[..., 2])
    later = [float(np.median(stream.correct(_result(np.full((3, 4), 4.0)), 'cam', 2 + i,
                                             (20.0,), decode_at).depth_m)) for i in range(20)]
    assert later == sorted(later, reverse=True) and later[-1] == pytest.approx(4.0)
    assert asked == [10.0]  # one re-decode per switch


def test_an_explicit_anchor_cancels_the_handover():
    stream = DepthStream('off')
    stream.anchor_switched(10.0)
    stream.anchor_set()
    result = _result(np.full((3, 4), 4.0))
    assert stream.correct(result, 'cam', 1, (20.0,), lambda a: pytest.fail('decoded')) is result


def test_the_filter_smooths_and_resets_on_a_new_frame_id_or_a_stamp_going_back():
    rng = np.random.default_rng(0)
    base = rng.uniform(2.0, 6.0, (24, 32)).astype(np.float32)
    stream = DepthStream('scale')
    scales = [1.0, 1.15, 0.9, 1.1, 0.92]
    outs = [stream.correct(_result(base * np.float32(s), points=False), 'cam', i, (10.0,),
                           lambda a: None).depth_m for i, s in enumerate(scales)]
    published = np.log([np.median(o / base) for o in outs])
    assert np.std(np.diff(published)) < np.std(np.diff(np.log(scales)))  # less jitter
    jump = _result(base * np.float32(1.3), points=False)
    assert stream.correct(jump, 'other_cam', 9, (10.0,), lambda a: None) is jump  # reset
    again = _result(base, points=False)
    assert stream.correct(again, 'other_cam', 3, (10.0,), lambda a: None) is again  # went back
    stream.set_filter('off')
    assert stream.filter.mode == 'off'


def test_the_camera_motion_reaches_the_filter():
    from metric_solver_ros.temporal_filter import CameraMotion

    rng = np.random.default_rng(1)
    base = rng.uniform(2.0, 6.0, (24, 32)).astype(np.float32)
    for motion, held in ((CameraMotion(), True), (None, False)):
        stream = DepthStream('scale')
        for i, s in enumerate((1.0, 1.05, 0.97, 1.04)):
            stream.correct(_result(base * np.float32(s), points=False), 'cam', i, (10.0,),
                           lambda a: None, camera_motion=motion)
        assert stream.filter.held is held


def test_a_corrected_result_moves_the_packed_cloud_and_keeps_its_colours():
    from metric_solver_ros.conversions import pack_cloud

    stream = DepthStream('off')
    stream.anchor_switched(10.0)
    new = _result(np.full((3, 4), 4.0))
    rgb = np.arange(3 * 4 * 3, dtype=np.uint8).reshape(3, 4, 3)
    packed = pack_cloud(new.points_m, rgb).view(np.float32).reshape(3, 4, 4)
    new = dataclasses.replace(new, cloud=packed, points_m=packed[..., :3], points_rgb=rgb,
                              statistics=(1.0, 0.0, 4.0, 4.0, 4.0))
    out = stream.correct(new, 'cam', 1, (20.0,), lambda a: np.full((3, 4), 5.0, np.float32))
    assert out.statistics is None  # of the raw depth: the message computes them anew
    assert np.shares_memory(out.points_m, out.cloud) and np.allclose(out.cloud[..., 2], 5.0)
    assert out.cloud.tobytes() == pack_cloud(out.points_m, rgb).tobytes()
    assert np.allclose(new.cloud[..., 2], 4.0)  # the engine's result is left as it was
