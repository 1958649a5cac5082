"""tf2's lookupTransform from a bag: chains through a common parent, /tf over time, the errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import transforms3d.euler as te

from metric_solver_ros import bagio
from metric_solver_ros.bagtf import (
    TF_STATIC_TOPIC,
    TF_TOPIC,
    PoseLookup,
    TransformError,
    tf_message,
)

T0 = 1_700_000_000_000_000_000
MS = 1_000_000


def _pose(roll: float, pitch: float, yaw: float, xyz: tuple[float, float, float]) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = te.euler2mat(roll, pitch, yaw, 'sxyz')
    pose[:3, 3] = xyz
    return pose


def _write(path, static, moving=()):
    with bagio.BagWriter(path) as bag:
        for parent, child, pose in static:
            bag.write(TF_STATIC_TOPIC, tf_message(pose, T0, parent, child), T0)
        for stamp, parent, child, pose in moving:
            bag.write(TF_TOPIC, tf_message(pose, stamp, parent, child), stamp)
    return PoseLookup.from_bag(path)


def test_chain_through_a_common_parent_and_back(tmp_path):
    base_cam = _pose(0.1, 0.2, 0.3, (0.2, 0.0, 0.3))
    cam_opt = _pose(-math.pi / 2, 0.0, -math.pi / 2, (0.0, 0.0, 0.0))
    base_lidar = _pose(0.0, 0.05, -0.4, (0.0, 0.1, 0.6))
    tree = _write(tmp_path / 'bag', [('base_link', 'camera_link', base_cam),
                                     ('camera_link', 'camera_optical', cam_opt),
                                     ('/base_link', 'lidar', base_lidar)])  # '/' is ignored
    expected = np.linalg.inv(base_cam @ cam_opt) @ base_lidar
    np.testing.assert_allclose(tree.transform('camera_optical', 'lidar', T0), expected,
                               atol=1e-9)
    np.testing.assert_allclose(tree.transform('/lidar', 'camera_optical', T0 + 10**12),
                               np.linalg.inv(expected), atol=1e-9)  # static: any time
    np.testing.assert_allclose(tree.transform('lidar', 'lidar', T0), np.eye(4))
    # below a common ancestor that is not the root, the root's edges are not needed
    np.testing.assert_allclose(tree.transform('camera_link', 'camera_optical', T0), cam_opt,
                               atol=1e-9)


def test_missing_chain_names_both_frames_and_the_tree(tmp_path):
    tree = _write(tmp_path / 'bag', [('base_link', 'camera_optical', np.eye(4)),
                                     ('odom', 'velodyne', np.eye(4))])
    with pytest.raises(TransformError) as info:
        tree.transform('camera_optical', 'lidar_link', T0)
    text = str(info.value)
    assert "'lidar_link'" in text and "'camera_optical'" in text and 'in no transform' in text
    assert 'base_link -> camera_optical (static)' in text and 'odom -> velodyne' in text
    with pytest.raises(TransformError, match='separate trees'):
        tree.transform('camera_optical', 'velodyne', T0)
    assert PoseLookup([]).describe() == 'no transforms'


def test_moving_edge_is_slerped_at_the_stamp(tmp_path):
    tree = _write(tmp_path / 'bag', [('base_link', 'lidar', _pose(0, 0, 0, (1, 0, 0)))], [
        (T0, 'odom', 'base_link', _pose(0, 0, 0, (0, 0, 0))),
        (T0 + 100 * MS, 'odom', 'base_link', _pose(0, 0, math.pi / 2, (2, 0, 0)))])
    # a quarter of the way: 22.5 degrees exactly (slerp), then the lever arm to the LiDAR
    quarter = tree.transform('odom', 'lidar', T0 + 25 * MS, tolerance_ns=100 * MS)
    angle = math.pi / 8
    np.testing.assert_allclose(quarter[:3, :3], te.euler2mat(0, 0, angle, 'sxyz'), atol=1e-12)
    np.testing.assert_allclose(quarter[:3, 3], [0.5 + math.cos(angle), math.sin(angle), 0],
                               atol=1e-12)
    with pytest.raises(TransformError, match=r'no transform odom -> base_link within 50 ms'):
        tree.transform('odom', 'lidar', T0 + 400 * MS)
