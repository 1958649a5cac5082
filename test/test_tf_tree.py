"""The bag's transform tree: quaternions, chains through a common parent, /tf over time."""

from __future__ import annotations

import math

import numpy as np
import pytest
import transforms3d.euler as te

from metric_solver_ros import bagio
from metric_solver_ros.tf_tree import (
    TF_STATIC_TOPIC,
    TF_TOPIC,
    TfTree,
    TransformError,
    invert,
    make_transform,
    matrix_to_quaternion,
    quaternion_to_matrix,
    tf_message,
    transform_points,
)

T0 = 1_700_000_000_000_000_000
MS = 1_000_000


def _pose(roll: float, pitch: float, yaw: float, xyz: tuple[float, float, float]) -> np.ndarray:
    return make_transform(te.euler2mat(roll, pitch, yaw, 'sxyz'), xyz)


def test_quaternion_convention_is_ros_xyzw():
    # 90 degrees about z: x -> y (REP 103, right-handed)
    s = math.sqrt(0.5)
    rotation = quaternion_to_matrix((0.0, 0.0, s, s))
    np.testing.assert_allclose(rotation @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    # unnormalised input is normalised; matrix -> quaternion -> matrix round-trips
    np.testing.assert_allclose(quaternion_to_matrix((0.0, 0.0, 2 * s, 2 * s)), rotation)
    r = te.euler2mat(0.3, -0.7, 2.5, 'sxyz')
    q = matrix_to_quaternion(r)
    assert q[3] >= 0
    np.testing.assert_allclose(quaternion_to_matrix(q), r, atol=1e-12)
    with pytest.raises(TransformError, match='not a rotation'):
        quaternion_to_matrix((0, 0, 0, 0))


def test_chain_through_common_parent_and_its_inverse():
    tree = TfTree()
    base_cam = _pose(0.1, 0.2, 0.3, (0.2, 0.0, 0.3))
    cam_opt = _pose(-math.pi / 2, 0.0, -math.pi / 2, (0.0, 0.0, 0.0))
    base_lidar = _pose(0.0, 0.05, -0.4, (0.0, 0.1, 0.6))
    tree.add('base_link', 'camera_link', base_cam, static=True)
    tree.add('camera_link', 'camera_optical', cam_opt, static=True)
    tree.add('/base_link', 'lidar', base_lidar, static=True)  # a leading slash is ignored
    assert tree.chain('camera_optical', 'lidar') == ['lidar', 'base_link', 'camera_link',
                                                     'camera_optical']
    expected = invert(base_cam @ cam_opt) @ base_lidar
    np.testing.assert_allclose(tree.lookup('camera_optical', 'lidar'), expected, atol=1e-12)
    np.testing.assert_allclose(tree.lookup('lidar', 'camera_optical'), invert(expected),
                               atol=1e-12)
    np.testing.assert_allclose(tree.lookup('lidar', 'lidar'), np.eye(4))
    assert tree.is_static('camera_optical', 'lidar')
    # a point: lidar -> optical through the lookup equals the explicit composition
    point = np.array([[1.0, 2.0, -0.5]])
    via_base = transform_points(invert(base_cam @ cam_opt), transform_points(base_lidar, point))
    np.testing.assert_allclose(transform_points(tree.lookup('camera_optical', 'lidar'), point),
                               via_base, atol=1e-12)


def test_missing_chain_names_both_frames_and_the_tree():
    tree = TfTree()
    tree.add('base_link', 'camera_optical', np.eye(4), static=True)
    tree.add('odom', 'velodyne', np.eye(4), static=True)
    with pytest.raises(TransformError) as info:
        tree.lookup('camera_optical', 'lidar_link')
    text = str(info.value)
    assert "'lidar_link'" in text and "'camera_optical'" in text
    assert 'base_link -> camera_optical (static)' in text and 'odom -> velodyne' in text
    with pytest.raises(TransformError, match='separate trees'):
        tree.lookup('camera_optical', 'velodyne')
    with pytest.raises(TransformError, match='two parents'):
        tree.add('odom', 'camera_optical', np.eye(4), static=True)
    assert 'no transforms' in TfTree().describe()


def test_moving_edge_is_interpolated_at_the_stamp():
    tree = TfTree()
    tree.add('odom', 'base_link', _pose(0, 0, 0, (0, 0, 0)), static=False, stamp_ns=T0)
    tree.add('odom', 'base_link', _pose(0, 0, math.pi / 2, (2, 0, 0)), static=False,
             stamp_ns=T0 + 100 * MS)
    tree.add('base_link', 'lidar', make_transform(None, (1, 0, 0)), static=True)
    assert not tree.is_static('odom', 'lidar')
    middle = tree.lookup('odom', 'base_link', T0 + 50 * MS)
    np.testing.assert_allclose(middle, _pose(0, 0, math.pi / 4, (1, 0, 0)), atol=1e-12)
    quarter = tree.lookup('odom', 'lidar', T0 + 25 * MS)  # slerp: 22.5 deg, then the lever arm
    angle = math.pi / 8
    np.testing.assert_allclose(quarter[:3, 3], [0.5 + math.cos(angle), math.sin(angle), 0],
                               atol=1e-12)
    # just past the recorded poses: the nearest holds; far past: a clear error
    np.testing.assert_allclose(tree.lookup('odom', 'base_link', T0 + 150 * MS)[:3, 3], [2, 0, 0])
    with pytest.raises(TransformError, match='not at'):
        tree.lookup('odom', 'base_link', T0 + 500 * MS)
    with pytest.raises(TransformError, match='needs a stamp'):
        tree.lookup('odom', 'base_link')


def test_tree_from_a_bag(tmp_path):
    base_lidar = _pose(0.0, 0.1, 0.2, (0.3, -0.1, 0.5))
    path = tmp_path / 'bag'
    with bagio.BagWriter(path) as bag:
        bag.write(TF_STATIC_TOPIC, tf_message([('base_link', 'lidar', base_lidar)], T0), T0)
        for i, x in enumerate((0.0, 1.0)):
            stamp = T0 + i * 100 * MS
            bag.write(TF_TOPIC, tf_message([('odom', 'base_link',
                                             make_transform(None, (x, 0, 0)))], stamp), stamp)
    tree = TfTree.from_bag(path)
    assert tree.frames == ['base_link', 'lidar', 'odom']
    np.testing.assert_allclose(tree.lookup('base_link', 'lidar'), base_lidar, atol=1e-6)
    np.testing.assert_allclose(tree.lookup('odom', 'base_link', T0 + 30 * MS)[:3, 3],
                               [0.3, 0, 0], atol=1e-9)
