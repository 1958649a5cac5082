"""LiDAR ground truth: PointCloud2, projection, coverage, the synthetic scanner.

Parsing, projection with binning / ROI / distortion, the coverage estimate, and the synthetic
scanner's cloud agreeing exactly with the rendered depth.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from metric_solver_ros import bagio
from metric_solver_ros.conversions import MessageError
from metric_solver_ros.lidar import (
    CameraModel,
    cloud_to_xyz,
    coverage_fraction,
    project_to_depth,
    xyz_to_cloud_msg,
)

T0 = 1_700_000_000_000_000_000


def _field(name, offset, datatype):
    return types.SimpleNamespace(name=name, offset=offset, datatype=datatype, count=1)


def test_cloud_round_trip_with_extra_fields_and_no_returns():
    xyz = np.array([[1.0, 2.0, 3.0], [np.nan, np.nan, np.nan], [-4.5, 0.25, 7.0]], np.float32)
    msg = xyz_to_cloud_msg(xyz, T0, 'lidar_link', intensity=np.array([1, 2, 3]),
                           ring=np.array([0, 1, 15]))
    assert msg.point_step == 24 and [f.name for f in msg.fields][-1] == 'ring'
    store = bagio.get_typestore()
    parsed = store.deserialize_cdr(store.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)
    np.testing.assert_array_equal(cloud_to_xyz(parsed), xyz[[0, 2]])  # NaN (no return) dropped


def test_organised_big_endian_cloud_with_row_padding():
    # z, y, x in an unusual order, float64 x, big-endian, 2 rows of 2 points, 4 pad bytes a row
    layout = np.dtype({'names': ['z', 'y', 'x'], 'formats': ['>f4', '>f4', '>f8'],
                       'offsets': [0, 4, 8], 'itemsize': 20})
    points = np.zeros((2, 2), layout)
    points['x'], points['y'], points['z'] = [[1, 2], [3, 4]], [[5, 6], [7, 8]], [[9, 10], [11, 12]]
    rows = [points[r].tobytes() + b'\0' * 4 for r in range(2)]
    msg = types.SimpleNamespace(
        height=2, width=2, point_step=20, row_step=44, is_bigendian=True, data=b''.join(rows),
        fields=[_field('z', 0, 7), _field('y', 4, 7), _field('x', 8, 8)])
    np.testing.assert_array_equal(cloud_to_xyz(msg), [[1, 5, 9], [2, 6, 10], [3, 7, 11],
                                                      [4, 8, 12]])
    msg.fields = [_field('x', 0, 4), _field('y', 4, 7), _field('z', 8, 7)]
    with pytest.raises(MessageError, match='field x has datatype 4'):
        cloud_to_xyz(msg)
    msg.fields = [_field('x', 0, 7), _field('y', 4, 7)]
    with pytest.raises(MessageError, match='no field z'):
        cloud_to_xyz(msg)
    msg.fields, msg.data = [_field('z', 0, 7), _field('y', 4, 7), _field('x', 8, 8)], b'\0' * 40
    with pytest.raises(MessageError, match='data holds 40 bytes'):
        cloud_to_xyz(msg)


def test_projection_keeps_the_nearest_point_per_pixel_centre():
    camera = CameraModel((10.0, 10.0, 2.0, 1.0), width=5, height=3)
    points = np.array([
        [0.0, 0.0, 2.0],     # -> pixel (2, 1)
        [0.0, 0.0, 1.0],     # the same pixel, nearer: wins
        [0.0, 0.0, 3.0],     # the same pixel, farther
        [-0.249, 0.0, 1.0],  # u = -0.49 -> column 0 (inside)
        [0.25, 0.0, 1.0],    # u = 4.5: beyond the last pixel centre's cell
        [0.0, 0.0, -1.0],    # behind the camera
    ])
    projection = project_to_depth(points, camera)
    expected = np.full((3, 5), np.nan, np.float32)
    expected[1, 2], expected[1, 0] = 1.0, 1.0
    np.testing.assert_array_equal(projection.depth_m, expected)
    assert (projection.points, projection.in_image) == (6, 4)


def test_camera_model_applies_binning_and_roi_as_the_node_does():
    from metric_solver_ros.conversions import camera_info_to_intrinsics

    roi = types.SimpleNamespace(x_offset=40, y_offset=20, width=200, height=120, do_rectify=False)
    info = types.SimpleNamespace(k=[300.0, 0, 160.0, 0, 310.0, 120.0, 0, 0, 1], width=320,
                                 height=240, binning_x=2, binning_y=2, roi=roi, d=[0.0] * 5,
                                 distortion_model='plumb_bob')
    camera = CameraModel.from_camera_info(info)
    assert (camera.width, camera.height) == (100, 60)
    assert camera.intrinsics == camera_info_to_intrinsics(info)
    full = CameraModel((300.0, 310.0, 160.0, 120.0), 320, 240)
    point = np.array([[0.3, -0.1, 2.0]])
    u_full, v_full, _ = full.project(point)
    u, v, inside = camera.project(point)
    assert inside[0]
    np.testing.assert_allclose([u[0], v[0]], [(u_full[0] - 40) / 2, (v_full[0] - 20) / 2])


def test_distortion_matches_opencv_and_folding_points_are_dropped():
    import cv2

    d = (-0.2, 0.05, 0.001, -0.002, 0.0)
    camera = CameraModel((200.0, 200.0, 159.5, 119.5), 320, 240, d)
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(-0.5, 0.5, (50, 2)), rng.uniform(1, 3, 50)])
    u, v, inside = camera.project(points)
    k = np.array([[200.0, 0, 159.5], [0, 200.0, 119.5], [0, 0, 1]])
    expected, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), k, np.array(d))
    np.testing.assert_allclose(np.column_stack([u, v]), expected.reshape(-1, 2), atol=1e-6)
    assert inside.any()
    # far outside the field of view the polynomial folds back into the image: not projected
    _, _, wide = camera.project(np.array([[3.0, 0.0, 1.0]]))
    assert not wide[0]


def test_coverage_of_a_spinning_lidar_is_the_cameras_share_of_360_degrees():
    azimuth = np.radians(np.arange(0, 360, 0.5))
    elevation = np.radians(np.linspace(-15, 15, 16))
    az, el = np.meshgrid(azimuth, elevation)
    ring = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1) * 5
    fov = (np.radians(60.0), np.radians(45.0))
    assert coverage_fraction(ring.reshape(-1, 3), fov) == pytest.approx(60 / 360, abs=0.01)
    forward = ring[:, (np.degrees(azimuth) < 20) | (np.degrees(azimuth) > 340)]
    assert coverage_fraction(forward.reshape(-1, 3), fov) == pytest.approx(1.0, abs=0.01)
    assert coverage_fraction(np.zeros((0, 3)), fov) == 0.0


def test_synthetic_lidar_gt_agrees_with_the_rendered_depth(tmp_path):
    """The analytic check of the projection, through the bag's /tf_static.

    A rotated and offset LiDAR's points, moved into the camera with the transforms read back from
    the bag (quaternions and all), land on pixel centres with exactly the rendered depth.
    """
    from metric_solver_ros.bagtf import PoseLookup
    from metric_solver_ros.cli import main
    from metric_solver_ros.data.rosbag import BagRGBD

    path = tmp_path / 'bag'
    assert main(['make-bag', '--out', str(path), '--synthetic', 'indoor', '--seed', '3',
                 '--frames', '2', '--size', '56', '84', '--lidar', '--lidar-offset', '0.07',
                 '-0.12', '0.04', '--lidar-rpy', '4', '-6', '12', '--lidar-azimuth-step',
                 '1.5', '--world-scale', '1.5']) == 0
    assert bagio.list_topics(path)['/lidar/points'] == 'sensor_msgs/msg/PointCloud2'
    tree = PoseLookup.from_bag(path)
    assert tree.frames == {'lidar_link', 'base_link', 'camera_link', 'camera_color_optical_frame'}
    common = dict(path=path, image_topic='/camera/color/image_raw',
                  camera_info_topic='/camera/color/camera_info')
    lidar = BagRGBD(**common, lidar_topic='/lidar/points')
    rendered = BagRGBD(**common, depth_topic='/camera/depth/image_raw')
    assert len(lidar) == len(rendered) == 2
    for sparse, dense in zip(lidar, rendered, strict=True):
        hit = np.isfinite(sparse.depth_m)
        assert hit.sum() > 200  # 16 rings across the image
        np.testing.assert_allclose(sparse.depth_m[hit], dense.depth_m[hit], rtol=2e-5)
        np.testing.assert_array_equal(sparse.image, dense.image)
    stats = lidar.stats
    # a 360-degree scanner: about the camera's share of its points land in the image
    assert 0.05 < stats.lidar_in_image / stats.lidar_points < 0.3
    assert stats.lidar_in_image / stats.lidar_allowed > 0.7
    assert stats.warnings == []
