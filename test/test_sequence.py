"""Synthetic camera sequences: determinism, exact poses against exact depth, safe paths."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metric_solver_ros.data.synthetic import (
    MOTIONS,
    camera_pose,
    render_sequence,
    sequence_spec,
)
from metric_solver_ros.data.synthetic.sequence import (
    SOLID_MARGIN_M,
    WALL_MARGIN_M,
    _solid_clearance,
)
from metric_solver_ros.temporal_metrics import warp

H, W = 36, 48


def test_sequences_are_deterministic():
    a = sequence_spec('indoor', 'pan', 4, seed=5)
    b = sequence_spec('indoor', 'pan', 4, seed=5)
    assert a == b
    assert sequence_spec('indoor', 'pan', 4, seed=6) != a
    assert sequence_spec('indoor', 'forward', 4, seed=5).specs[0].boxes is not None
    first = list(render_sequence(a, H, W))
    again = list(render_sequence(b, H, W))
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.depth_m, y.depth_m)
        np.testing.assert_array_equal(x.pose_world_cam, y.pose_world_cam)
    assert first[2].name == 'synthetic/indoor/pan/5/0002'
    for bad in (dict(kind='space'), dict(motion='orbit'), dict(frames=0), dict(seed=-1)):
        args = dict(kind='indoor', motion='static', frames=2, seed=0) | bad
        with pytest.raises(ValueError):
            sequence_spec(**args)


def _reprojection_errors(prev, cur, cur_from_prev):
    """|ln(warped depth / depth of ``cur`` there)| of ``prev``'s pixels where ``cur`` is smooth.

    Inverse depth is linear in pixel coordinates on a plane, so inverse depth interpolated
    bilinearly between four pixels of one surface is exact there: no rounding error.
    """
    finite = np.isfinite(prev.depth_m)
    rows, cols, z = warp(prev.depth_m[finite], np.nonzero(finite), prev.intrinsics,
                         cur_from_prev)
    inverse = 1.0 / cur.depth_m.astype(np.float64)  # sky: 0
    with np.errstate(invalid='ignore'):
        r0, c0 = np.floor(rows), np.floor(cols)
        inside = (z > 0.1) & (r0 >= 0) & (r0 < H - 1) & (c0 >= 0) & (c0 < W - 1)
    r0, c0 = r0[inside].astype(int), c0[inside].astype(int)
    fr, fc = rows[inside] - r0, cols[inside] - c0
    corners = np.stack([inverse[r0, c0], inverse[r0, c0 + 1], inverse[r0 + 1, c0],
                        inverse[r0 + 1, c0 + 1]])
    smooth = (corners.min(0) > 0) & (corners.max(0) < 1.03 * corners.min(0))
    interpolated = ((1 - fr) * ((1 - fc) * corners[0] + fc * corners[1])
                    + fr * ((1 - fc) * corners[2] + fc * corners[3]))
    return np.abs(np.log(z[inside][smooth] * interpolated[smooth])), inside.mean()


@pytest.mark.parametrize(('kind', 'motion', 'seed'), [('indoor', 'forward', 3),
                                                      ('outdoor', 'forward', 1),
                                                      ('indoor', 'pan', 2)])
def test_a_static_point_reprojected_with_the_poses_lands_where_the_depth_says(kind, motion,
                                                                                seed):
    frames = list(render_sequence(sequence_spec(kind, motion, 3, seed=seed), H, W))
    for prev, cur in zip(frames, frames[1:], strict=False):
        cur_from_prev = np.linalg.inv(cur.pose_world_cam) @ prev.pose_world_cam
        error, inside = _reprojection_errors(prev, cur, cur_from_prev)
        assert inside > 0.5 and error.size > 200
        # Exact (float rounding: ~1e-7) but for occlusion edges that look smooth by chance.
        assert np.median(error) < 1e-5, np.median(error)
        assert (error < 0.01).mean() > 0.9
        # Without the motion (identity) the points do not fit: the test can fail.
        still, _ = _reprojection_errors(prev, cur, np.eye(4))
        assert np.median(still) > 1e-3


def test_poses_are_rigid_in_a_z_up_world():
    sequence = sequence_spec('outdoor', 'static', 2, seed=4)
    pose = camera_pose(sequence.specs[0].camera)
    assert np.allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3))
    assert np.linalg.det(pose[:3, :3]) == pytest.approx(1.0)
    assert pose[2, 3] == pytest.approx(sequence.specs[0].camera.position_m[1])  # height is z
    # The optical axis (camera z) is nearly horizontal; the camera's "down" (y) points down.
    assert abs(pose[2, 2]) < 0.5 and pose[2, 1] < -0.8


def test_forward_paths_stay_inside_rooms_and_clear_of_solids():
    moved = []
    for seed in range(8):
        sequence = sequence_spec('indoor', 'forward', 30, seed=seed)
        spec = sequence.specs[0]
        x0, x1, y0, y1, z0, z1 = spec.room.bounds_m
        positions = np.array([s.camera.position_m for s in sequence.specs])
        slack = 0.01  # the mount vibration (1 mm std)
        assert (positions[:, 0] > x0 + WALL_MARGIN_M - slack).all()
        assert (positions[:, 0] < x1 - WALL_MARGIN_M + slack).all()
        assert (positions[:, 2] > z0 + WALL_MARGIN_M - slack).all()
        assert (positions[:, 2] < z1 - WALL_MARGIN_M + slack).all()
        assert (positions[:, 1] > y0).all() and (positions[:, 1] < y1).all()
        assert (_solid_clearance(spec.boxes, positions) > SOLID_MARGIN_M - slack).all()
        moved.append(np.linalg.norm(positions[-1] - positions[0]))
    # Walking speed for 2.9 s: most sequences get their whole path.
    assert np.median(moved) > 2.0, moved


def test_pans_turn_in_place_and_see_only_the_room():
    sequence = sequence_spec('indoor', 'pan', 20, seed=2, rate_hz=10.0)
    cameras = [s.camera for s in sequence.specs]
    positions = np.array([c.position_m for c in cameras])
    assert np.ptp(positions, axis=0).max() < 0.01  # vibration only
    yaws = np.unwrap([c.yaw_rad for c in cameras])
    turned = abs(yaws[-1] - yaws[0])
    assert math.radians(8 * 1.9 * 0.8) < turned < math.radians(15 * 1.9 * 1.2)
    assert np.all(np.diff(yaws) * np.sign(yaws[-1] - yaws[0]) > 0)  # one direction
    for frame in render_sequence(sequence, 12, 16):
        assert np.isfinite(frame.depth_m).all()  # inside the room: no sky anywhere


@pytest.mark.parametrize('motion', MOTIONS)
def test_frames_differ_in_noise_and_exposure_but_keep_the_scene(motion):
    frames = list(render_sequence(sequence_spec('outdoor', motion, 2, seed=8), H, W))
    assert not np.array_equal(frames[0].image, frames[1].image)
    finite = np.isfinite(frames[0].depth_m) & np.isfinite(frames[1].depth_m)
    change = np.abs(np.log(frames[1].depth_m[finite] / frames[0].depth_m[finite]))
    assert np.median(change) < 0.2
    if motion == 'static':  # vibration only (0.2 deg moves the far ground most)
        assert np.median(change) < 0.03
