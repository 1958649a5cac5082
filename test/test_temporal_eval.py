"""Camera poses through real bags (/tf written and read back) and eval over time, end to end."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass

import numpy as np
import pytest

from metric_solver_ros import bagio, evaluation
from metric_solver_ros.bagtf import PoseLookup, tf_message
from metric_solver_ros.commands import eval as eval_command
from metric_solver_ros.commands import make_bag

IMAGE, DEPTH = '/camera/color/image_raw', '/camera/depth/image_raw'
PRED, INFO = '/depth_pred', '/camera/color/camera_info'
T0 = 1_700_000_000_000_000_000
MS = 1_000_000
SHAPE = (24, 32)


def _pose(x=0.0, y=0.0, z=0.0, yaw_rad=0.0):
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    pose = np.eye(4)
    pose[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    pose[:3, 3] = (x, y, z)
    return pose


@dataclass
class Frame:
    image: np.ndarray
    depth_m: np.ndarray
    intrinsics: tuple[float, float, float, float] | None = (30.0, 30.0, 15.5, 11.5)
    pose_world_cam: np.ndarray | None = None


def _parse(module, argv):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


def _json(path):
    return json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f'{c} in JSON'))


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_tf_written_with_frames_and_read_back(tmp_path, storage):
    rng = np.random.default_rng(0)
    poses = [_pose(0.1 * i, -0.2, 1.5, 0.3 * i) for i in range(3)]
    frames = [Frame(rng.integers(0, 256, (*SHAPE, 3), dtype=np.uint8),
                    rng.uniform(1, 5, SHAPE).astype(np.float32), pose_world_cam=p) for p in poses]
    frames[1].pose_world_cam = None  # a frame without a pose writes no transform
    bagio.write_rgbd_bag(tmp_path / 'bag', frames, storage=storage, frame_id='cam_optical',
                         world_frame='odom')
    assert bagio.list_topics(tmp_path / 'bag')['/tf'] == 'tf2_msgs/msg/TFMessage'
    lookup = PoseLookup.from_bag(tmp_path / 'bag')
    assert lookup.frames == {'odom', 'cam_optical'}
    for i in (0, 2):
        root, pose = lookup.lookup('cam_optical', T0 + i * 100 * MS, tolerance_ns=0)
        assert root == 'odom'
        np.testing.assert_allclose(pose, poses[i], atol=1e-12)
    assert lookup.lookup('cam_optical', T0 + 500 * MS, tolerance_ns=MS) is None  # none near
    assert lookup.lookup('base_link', T0) is None
    # The evaluation frames carry them (the middle frame has none within 20 ms).
    read = list(evaluation.BagFrames(tmp_path / 'bag', IMAGE, DEPTH, info_topic=INFO))
    assert read[1].pose_world_cam is None
    np.testing.assert_allclose(read[2].pose_world_cam, poses[2], atol=1e-12)
    assert read[0].intrinsics == pytest.approx((30.0, 30.0, 15.5, 11.5))
    no_tf = evaluation.BagFrames(tmp_path / 'bag', IMAGE, DEPTH, poses=False)
    assert no_tf.poses is None and next(iter(no_tf)).pose_world_cam is None


def test_pose_lookup_walks_the_tree_and_interpolates(tmp_path):
    base_to_cam = _pose(0.2, 0.0, 0.5, -math.pi / 2)
    with bagio.BagWriter(tmp_path / 'bag') as bag:
        bag.write('/tf_static', tf_message(base_to_cam, T0, 'base_link', 'cam'), T0)
        for i in range(3):  # odometry at 10 Hz: 1 m/s along x, turning 0.2 rad/s
            stamp = T0 + i * 100 * MS
            bag.write('/tf', tf_message(_pose(0.1 * i, yaw_rad=0.02 * i), stamp, 'odom',
                                        'base_link'), stamp)
    lookup = PoseLookup.from_bag(tmp_path / 'bag')
    root, pose = lookup.lookup('/cam', T0 + 150 * MS, tolerance_ns=100 * MS)
    assert root == 'odom'
    np.testing.assert_allclose(pose, _pose(0.15, yaw_rad=0.03) @ base_to_cam, atol=1e-4)
    assert lookup.lookup('cam', T0 + 150 * MS, tolerance_ns=10 * MS) is None
    np.testing.assert_allclose(lookup.lookup('cam', T0 + 210 * MS, tolerance_ns=20 * MS)[1],
                               _pose(0.2, yaw_rad=0.04) @ base_to_cam, atol=1e-12)
    with pytest.raises(ValueError, match='det'):
        tf_message(np.diag([1.0, -1.0, 1.0, 1.0]), T0, 'a', 'b')


def test_make_bag_sequence_writes_the_exact_poses(tmp_path):
    from metric_solver_ros.data.synthetic import render_sequence, sequence_spec

    argv = ['--out', str(tmp_path / 'bag'), '--synthetic-sequence', 'indoor', '--motion',
            'forward', '--frames', '3', '--seed', '4', '--size', '12', '16', '--rate', '5']
    assert make_bag.run(_parse(make_bag, argv)) == 0
    frames = list(evaluation.BagFrames(tmp_path / 'bag', IMAGE, DEPTH, info_topic=INFO))
    expected = list(render_sequence(sequence_spec('indoor', 'forward', 3, 4, rate_hz=5.0), 12, 16))
    for frame, sample in zip(frames, expected, strict=True):
        np.testing.assert_array_equal(frame.image, sample.image)
        np.testing.assert_array_equal(frame.gt_depth_m, sample.depth_m)
        np.testing.assert_allclose(frame.pose_world_cam, sample.pose_world_cam, atol=1e-9)
        assert frame.intrinsics == pytest.approx(sample.intrinsics)
    assert np.linalg.norm(frames[2].pose_world_cam[:3, 3] - frames[0].pose_world_cam[:3, 3]) > 0.2
    with pytest.raises(ValueError, match='--motion'):
        make_bag.run(_parse(make_bag, ['--out', str(tmp_path / 'b2'), '--synthetic-sequence',
                                       'indoor']))


def _jittered_bag(path, n=30, tf=True):
    """A still camera before a structured scene; the prediction topic wobbles in scale."""
    rng = np.random.default_rng(5)
    gt = rng.uniform(1.0, 8.0, (6, 8)).repeat(4, 0).repeat(4, 1).astype(np.float32)
    with bagio.BagWriter(path) as bag:
        for i in range(n):
            stamp = T0 + i * 100 * MS
            bag.write(IMAGE, bagio.rgb_to_image_msg(np.zeros((*SHAPE, 3), np.uint8), stamp,
                                                    'cam'), stamp)
            bag.write(INFO, bagio.camera_info_msg((30.0, 30.0, 15.5, 11.5), SHAPE[1], SHAPE[0],
                                                  stamp, 'cam'), stamp)
            bag.write(DEPTH, bagio.depth_to_image_msg(gt, stamp, 'cam'), stamp)
            wobble = np.float32(math.exp(rng.normal(0.0, 0.05)))
            noise = np.exp(rng.normal(0.0, 0.01, SHAPE)).astype(np.float32)
            bag.write(PRED, bagio.depth_to_image_msg(gt * wobble * noise, stamp, 'cam'), stamp)
            if tf:
                bag.write('/tf', tf_message(_pose(z=1.0), stamp, 'map', 'cam'), stamp)


def test_eval_temporal_filter_end_to_end_on_a_jittered_topic(tmp_path, capsys):
    _jittered_bag(tmp_path / 'bag')
    out = {}
    for mode in ('off', 'scale', 'full', 'scale+blind'):
        filter_mode, _, blind = mode.partition('+')
        argv = ['--bag', str(tmp_path / 'bag'), '--pred-topic', PRED, '--cap', '10',
                '--examples', '0', '--temporal-filter', filter_mode, '--out', str(tmp_path / mode),
                '--motion-hint', 'off' if blind else 'auto']
        assert eval_command.run(_parse(eval_command, argv)) == 0
        out[mode] = _json(tmp_path / mode / 'metrics.json')
    temporal = {mode: data['temporal']['pred_topic'] for mode, data in out.items()}
    assert temporal['off']['still_camera_from'] == 'poses'
    assert temporal['off']['warped_pairs'] == 29 and temporal['off']['static_fraction'] == 1.0
    assert out['off']['config']['warp_intrinsics_topic'] == INFO
    assert out['scale']['config']['temporal_filter'] == 'scale'
    # Halved by scale, more by full; accuracy not lower.
    assert temporal['scale']['scale_jitter'] < 0.5 * temporal['off']['scale_jitter']
    assert temporal['scale']['flicker'] < 0.7 * temporal['off']['flicker']
    assert temporal['full']['flicker'] < temporal['scale']['flicker']
    assert temporal['full']['warped_error'] < temporal['off']['warped_error']
    for mode in ('scale', 'full'):
        assert out[mode]['results']['pred_topic']['delta1'] >= \
            out['off']['results']['pred_topic']['delta1'] - 0.01
    # The /tf says the camera is still: held, far steadier than blind (which halves it).
    assert out['scale']['config']['motion_hint_frames'] == 29  # every frame after the first
    assert out['scale+blind']['config']['motion_hint_frames'] == 0
    assert temporal['scale']['scale_jitter'] < 0.3 * temporal['scale+blind']['scale_jitter']
    report = (tmp_path / 'full' / 'report.md').read_text()
    assert '## Over time' in report and '![temporal](temporal.png)' in report
    assert (tmp_path / 'full' / 'temporal.png').stat().st_size > 0
    assert 'scale_jitter' in capsys.readouterr().out


def test_eval_without_tf_uses_the_users_static_camera(tmp_path):
    _jittered_bag(tmp_path / 'bag', n=4, tf=False)
    argv = ['--bag', str(tmp_path / 'bag'), '--pred-topic', PRED, '--cap', '10', '--examples',
            '0', '--static-camera', '--temporal-filter', 'scale', '--out', str(tmp_path / 'out')]
    assert eval_command.run(_parse(eval_command, argv)) == 0
    data = _json(tmp_path / 'out' / 'metrics.json')
    assert data['config']['motion_hint_frames'] == 4  # the user's still camera, without /tf
    temporal = data['temporal']['pred_topic']
    assert temporal['still_camera_from'] == 'user' and temporal['warped_error'] is None
    assert temporal['frames'] == 4 and len(temporal['ln_scale_ratio']) == 4
    with pytest.raises(ValueError, match='--static-camera'):
        eval_command.run(_parse(eval_command, ['--synthetic', 'indoor', '--static-camera']))
    assert eval_command.sibling_info_topic('/cam/image_raw/compressed',
                                           {'/cam/camera_info': bagio.CAMERA_INFO}) == \
        '/cam/camera_info'
    assert eval_command.sibling_info_topic('/cam/image_raw', {}) is None


def test_eval_model_on_a_sequence_bag_with_the_filter(tmp_path):
    """The model path: a micro engine on a rendered static sequence, filter full."""
    from metric_solver_ros.checkpoint import save_checkpoint
    from metric_solver_ros.model import create_model
    from metric_solver_ros.model.config import MetricSolverConfig

    pytest.importorskip('torch').manual_seed(0)
    save_checkpoint(tmp_path / 'micro.safetensors', create_model(MetricSolverConfig(
        embed_dim=48, depth=4, num_heads=2, head_features=8, head_out_channels=(8, 8, 8, 8),
        head_hidden=8, anchor_dim=8, input_size=(28, 28))))
    assert make_bag.run(_parse(make_bag, [
        '--out', str(tmp_path / 'bag'), '--synthetic-sequence', 'indoor', '--motion', 'static',
        '--frames', '3', '--size', '12', '16'])) == 0
    argv = ['--bag', str(tmp_path / 'bag'), '--checkpoint', str(tmp_path / 'micro.safetensors'),
            '--device', 'cpu', '--anchors', '2', '10', '--cap', '10', '--examples', '0',
            '--temporal-filter', 'full', '--out', str(tmp_path / 'out')]
    assert eval_command.run(_parse(eval_command, argv)) == 0
    data = _json(tmp_path / 'out' / 'metrics.json')
    assert set(data['temporal']) == {'anchor=2', 'anchor=10'}
    for values in data['temporal'].values():
        assert values['frames'] == 3 and values['warped_pairs'] == 2
        assert values['still_camera_from'] == 'poses' and values['scale_jitter'] is not None
