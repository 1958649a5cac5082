"""``metric-solver replay`` into a real node process over DDS, recorded into real bags."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shlex

import numpy as np
import pytest
from node_harness import small_checkpoint

from metric_solver_ros import bagio
from metric_solver_ros.commands import eval as eval_command
from metric_solver_ros.commands import replay
from metric_solver_ros.node_client import DepthNodeClient, NodeProcess, wait_for

NS, NS_COMPRESSED = '/replay', '/replay_jpeg'
IMAGE, DEPTH = '/camera/color/image_raw', '/camera/depth/image_raw'
INFO = '/camera/color/camera_info'
FRAMES, HEIGHT, WIDTH = 7, 96, 128
START_NS = 1_600_000_000_000_000_000  # years ago: the stamps are not "now"


def _parse(module, argv):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


@pytest.fixture(scope='module')
def scenes():
    from metric_solver_ros.data.synthetic import render_scene

    return [render_scene('indoor', seed, HEIGHT, WIDTH) for seed in range(FRAMES)]


@pytest.fixture(scope='module')
def bag(tmp_path_factory, scenes):
    path = tmp_path_factory.mktemp('bags') / 'input'
    assert bagio.write_rgbd_bag(path, scenes, start_ns=START_NS, rate_hz=10.0) == FRAMES
    return path


@pytest.fixture(scope='module')
def stamps(bag):
    return [bagio.header_stamp_ns(m) for _, _, m in bagio.read_topics(bag, [DEPTH])]


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    return small_checkpoint(tmp_path_factory.mktemp('model') / 'small.safetensors')


@contextlib.contextmanager
def _running_node(checkpoint, log, namespace, transport):
    process = NodeProcess(['-r', f'__ns:={namespace}', '-p', f'checkpoint:={checkpoint}',
                           '-p', 'device:=cpu', '-p', 'anchor:=4.0',
                           '-p', f'image_transport:={transport}'], log)
    try:
        # The node is up once its set_anchor service is discovered.
        from rclpy.node import Node

        probe = Node('replay_test_probe')
        try:
            assert wait_for(lambda: not process.alive() or f'{namespace}/set_anchor'
                            in dict(probe.get_service_names_and_types()), 60.0), process.output()
            assert process.alive(), process.output()
        finally:
            probe.destroy_node()
        yield process
    finally:
        process.stop()
        print(process.output())


@pytest.fixture(scope='module')
def node(checkpoint, tmp_path_factory, rclpy_context):
    with _running_node(checkpoint, tmp_path_factory.mktemp('node') / 'node.log', NS,
                       'raw') as process:
        yield process


@pytest.fixture(scope='module')
def compressed_node(checkpoint, tmp_path_factory, rclpy_context):
    with _running_node(checkpoint, tmp_path_factory.mktemp('node') / 'node.log', NS_COMPRESSED,
                       'compressed') as process:
        yield process


def _recorded_stamps(path, topic):
    store = bagio.recording_typestore()
    from rosbags.rosbag2 import Reader

    with Reader(path) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        return [(bagio.header_stamp_ns(store.deserialize_cdr(raw, c.msgtype)),
                 store.deserialize_cdr(raw, c.msgtype))
                for c, _, raw in reader.messages(connections=connections)]


def test_lockstep_replay_answers_every_frame_and_records_an_evaluable_bag(node, bag, stamps,
                                                                          tmp_path, capsys):
    record = tmp_path / 'out' / 'recorded'
    code = replay.run(_parse(replay, [
        '--bag', bag, '--image-topic', IMAGE, '--camera-info-topic', INFO, '--rate', 5,
        '--namespace', NS, '--record', record, '--lockstep', '--wait-s', 10]))
    printed = capsys.readouterr().out
    assert code == 0, printed + node.output()
    summary = json.loads((tmp_path / 'out' / 'replay.json').read_text())
    assert summary['frames_published'] == FRAMES
    assert summary['frames_answered'] == FRAMES, (summary, node.output())
    assert summary['unanswered_stamps_ns'] == []
    assert f'answered: {FRAMES} / {FRAMES}' in printed
    end_to_end, node_latency = summary['latency_ms']['end_to_end'], summary['latency_ms']['node']
    assert end_to_end['n'] == FRAMES and 0 < end_to_end['p50'] <= end_to_end['p99']
    # Stamps years old: float32 DepthInfo.latency_ms cannot give the node latency; said so.
    assert node_latency['n'] == 0 and 'too old' in summary['notes'][0]
    assert summary['latency_ms']['depth_info_raw']['p50'] > 1e9  # > 11 days: the stamps' age
    assert summary['inference_ms']['n'] == FRAMES

    topics = bagio.list_topics(record)
    assert topics[f'{NS}/depth'] == 'sensor_msgs/msg/Image'
    assert topics[f'{NS}/anchor_mask'] == 'sensor_msgs/msg/Image'
    assert topics[f'{NS}/depth_info'] == 'metric_solver_ros/msg/DepthInfo'
    assert {IMAGE, DEPTH, INFO} <= set(topics) and f'{NS}/points' not in topics
    depth = _recorded_stamps(record, f'{NS}/depth')
    assert sorted(s for s, _ in depth) == stamps  # the original stamps, one answer each
    assert all((m.width, m.height, m.encoding) == (WIDTH, HEIGHT, '32FC1') for _, m in depth)
    infos = _recorded_stamps(record, f'{NS}/depth_info')
    assert sorted(s for s, _ in infos) == stamps
    assert all(m.anchor == pytest.approx(4.0) and m.width == WIDTH for _, m in infos)
    assert sorted(s for s, _ in _recorded_stamps(record, DEPTH)) == stamps  # GT copied

    # The suggested eval command runs as printed, with the indoor cap of this indoor GT.
    out = tmp_path / 'eval'
    assert summary['eval_command'].endswith(f'--pred-topic {NS}/depth --cap 10')
    assert summary['eval_cap']['cap_m'] == 10.0 and '(an indoor scene' in printed
    words = shlex.split(summary['eval_command'])
    assert words[:2] == ['metric-solver', 'eval']
    assert eval_command.run(_parse(eval_command, [*words[2:], '--out', out])) == 0
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['frames'] == FRAMES and metrics['config']['cap'] == 10.0
    assert metrics['results']['pred_topic']['n_frames'] == FRAMES
    assert metrics['config']['pairing']['max_abs_dt_ms'] == 0.0

    # --force records afresh over the earlier recording and its replay.json.
    code = replay.run(_parse(replay, [
        '--bag', bag, '--image-topic', IMAGE, '--namespace', NS, '--record', record,
        '--lockstep', '--wait-s', 10, '--max-frames', 2, '--force', '--temporal-filter',
        'full']))
    assert code == 0, capsys.readouterr().out + node.output()
    summary = json.loads((tmp_path / 'out' / 'replay.json').read_text())
    assert summary['frames_published'] == summary['frames_answered'] == 2
    assert summary['temporal_filter'] == 'full'
    probe = DepthNodeClient(NS)
    try:
        assert probe.get_parameter('temporal_filter') == 'full'  # set on the running node
        assert probe.set_parameters(temporal_filter='off')[0].successful
    finally:
        probe.close()
    assert len(_recorded_stamps(record, f'{NS}/depth')) == 2
    assert len(_recorded_stamps(record, DEPTH)) == 2


def test_fast_compressed_replay_reports_dropped_frames_precisely(compressed_node, scenes,
                                                                  tmp_path):
    import time

    bag = tmp_path / 'live'  # JPEG images with stamps of now, as from a live camera
    bagio.write_rgbd_bag(bag, scenes, start_ns=time.time_ns(), rate_hz=10.0, storage='sqlite3',
                         compressed=True)
    stamps = [bagio.header_stamp_ns(m) for _, _, m in bagio.read_topics(bag, [DEPTH])]
    record, summary_path = tmp_path / 'recorded', tmp_path / 'summary.json'
    code = replay.run(_parse(replay, [
        '--bag', bag, '--image-topic', IMAGE + '/compressed', '--camera-info-topic', INFO,
        '--rate', 50, '--namespace', NS_COMPRESSED, '--record', record, '--storage', 'sqlite3',
        '--points', '--wait-s', 6, '--summary', summary_path]))
    summary = json.loads(summary_path.read_text())
    assert code == 0 and summary['frames_published'] == FRAMES
    assert summary['image_type'] == 'sensor_msgs/msg/CompressedImage'
    recorded = {s for s, _ in _recorded_stamps(record, f'{NS_COMPRESSED}/depth')}
    # Whatever the node dropped, the report names exactly the frames that got no depth.
    assert recorded <= set(stamps) and summary['frames_answered'] == len(recorded) >= 1
    assert set(summary['unanswered_stamps_ns']) == set(stamps) - recorded
    assert [f['answered'] for f in summary['frames']] == [s in recorded for s in stamps]
    points = _recorded_stamps(record, f'{NS_COMPRESSED}/points')
    assert points and {s for s, _ in points} <= recorded
    assert all((m.height, m.width) == (HEIGHT, WIDTH) for _, m in points)
    assert summary['record']['messages'][f'{NS_COMPRESSED}/depth'] == len(recorded)
    assert summary['record']['messages'][IMAGE + '/compressed'] == FRAMES
    # Recent stamps: the node latency comes from DepthInfo.latency_ms, below end to end + slack.
    latency = summary['latency_ms']
    assert latency['node']['n'] == len(recorded) and summary['notes'] == []
    assert 0 < latency['node']['p50'] < latency['end_to_end']['max'] + 50.0


def test_no_node_and_bad_inputs_are_reported(bag, tmp_path, capsys, rclpy_context):
    args = ['--bag', bag, '--namespace', '/nobody_here', '--wait-s', 0.5]
    assert replay.run(_parse(replay, args)) == 1
    assert 'no running node on /nobody_here' in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match='no bag'):
        replay.run(_parse(replay, ['--bag', tmp_path / 'missing']))
    with pytest.raises(ValueError, match='not in .*it holds: .*/camera/depth/image_raw'):
        replay.run(_parse(replay, ['--bag', bag, '--image-topic', '/nope']))
    with pytest.raises(ValueError, match='is sensor_msgs/msg/CameraInfo, not Image or Compressed'):
        replay.run(_parse(replay, ['--bag', bag, '--image-topic', INFO]))
    with pytest.raises(ValueError, match='is sensor_msgs/msg/Image, not CameraInfo'):
        replay.run(_parse(replay, ['--bag', bag, '--camera-info-topic', DEPTH]))
    with pytest.raises(ValueError, match='exists; pass --force to overwrite it'):
        replay.run(_parse(replay, ['--bag', bag, '--record', bag]))
    with pytest.raises(ValueError, match='--rate'):
        replay.run(_parse(replay, ['--bag', bag, '--rate', 0]))


def test_force_deletes_only_an_earlier_recording_and_only_once_a_node_answers(
        bag, scenes, tmp_path, capsys, rclpy_context):
    old = tmp_path / 'old'
    bagio.write_rgbd_bag(old, scenes[:1])
    (tmp_path / 'replay.json').write_text(json.dumps({'frames_published': 1, 'latency_ms': {}}))
    args = ['--bag', bag, '--record', old, '--namespace', '/nobody_here', '--wait-s', 0.5]
    with pytest.raises(ValueError, match=f'{old} exists; pass --force to overwrite it'):
        replay.run(_parse(replay, args))
    # Allowed, but no node answers: the earlier recording stays.
    assert replay.run(_parse(replay, [*args, '--force'])) == 1
    assert 'no running node' in capsys.readouterr().err
    assert bagio.list_topics(old)[DEPTH] == 'sensor_msgs/msg/Image'
    # Never the bag being played, nor a folder that holds more than a bag.
    with pytest.raises(ValueError, match='holds the --bag being played; --force does not'):
        replay.run(_parse(replay, ['--bag', bag, '--record', bag, '--force']))
    with pytest.raises(ValueError, match='holds the --bag being played'):
        replay.run(_parse(replay, ['--bag', old / 'old.mcap', '--record', old, '--force']))
    (old / 'notes.txt').write_text('mine')
    with pytest.raises(ValueError, match=f'{old} is not a bag folder .*remove it yourself'):
        replay.run(_parse(replay, [*args, '--force']))
    assert (old / 'notes.txt').read_text() == 'mine' and (old / 'metadata.yaml').is_file()
    # A replay.json beside it that is not a replay summary is not overwritten either.
    (tmp_path / 'replay.json').write_text('{"mine": 1}')
    with pytest.raises(ValueError, match='is not a replay summary, so --force leaves it alone'):
        replay.run(_parse(replay, ['--bag', bag, '--record', tmp_path / 'new', '--force']))


def test_is_bag_folder(tmp_path, scenes):
    bagio.write_rgbd_bag(tmp_path / 'mcap', scenes[:1])
    bagio.write_rgbd_bag(tmp_path / 'db3', scenes[:1], storage='sqlite3')
    (tmp_path / 'empty').mkdir()
    assert all(bagio.is_bag_folder(tmp_path / n) for n in ('mcap', 'db3', 'empty'))
    (tmp_path / 'mcap' / 'sub').mkdir()
    assert not bagio.is_bag_folder(tmp_path / 'mcap')
    assert not bagio.is_bag_folder(tmp_path / 'db3' / 'db3.db3')  # a file
    assert not bagio.is_bag_folder(tmp_path / 'missing')
    (tmp_path / 'link').symlink_to(tmp_path / 'db3')
    assert not bagio.is_bag_folder(tmp_path / 'link')


def test_the_suggested_cap_comes_from_the_recorded_gt(bag, tmp_path):
    from metric_solver_ros.data.synthetic import render_scene

    assert replay._suggest_cap(bag, DEPTH, FRAMES) == (10.0, 0.0)  # indoor scenes
    outdoor = [render_scene('outdoor', seed, HEIGHT, WIDTH) for seed in range(3)]
    bagio.write_rgbd_bag(tmp_path / 'outdoor', outdoor, depth_encoding='16UC1')
    gt = np.concatenate([s.depth_m[::2, ::2].ravel() for s in outdoor])
    gt = np.where(gt > 65.5355, np.nan, gt)  # what 16UC1 keeps (beyond 65.535 m: none)
    share = np.count_nonzero(gt > 10.0) / np.count_nonzero(gt > 1e-3)
    cap_m, got = replay._suggest_cap(tmp_path / 'outdoor', DEPTH, 3)
    assert cap_m == 80.0 and got == pytest.approx(share) and share > 0.05
    # GT without a valid pixel: no suggestion (eval's default --cap applies, said so).
    invalid = dataclasses.replace(outdoor[0], depth_m=np.full((HEIGHT, WIDTH), np.nan))
    bagio.write_rgbd_bag(tmp_path / 'invalid', [invalid] * 3)
    assert replay._suggest_cap(tmp_path / 'invalid', DEPTH, 3) is None
    args = _parse(replay, ['--bag', bag, '--record', tmp_path / 'my record'])
    command, why = replay._eval_suggestion(args, f'{NS}/depth', None)
    assert '--cap' not in shlex.split(command) and f"'{tmp_path / 'my record'}'" in command
    assert why['cap_m'] is None and "eval's default --cap 80 m (outdoors) applies" in why['reason']

def test_depth_info_type_round_trips_through_rosbags():
    from rclpy.serialization import serialize_message

    from metric_solver_ros.msg import DepthInfo

    msg = DepthInfo(anchor=2.0, anchors=[1.0, 2.0], anchor_mode='auto', width=7, latency_ms=3.5)
    msg.header.stamp.sec, msg.header.frame_id = 42, 'cam'
    decoded = bagio.recording_typestore().deserialize_cdr(
        serialize_message(msg), bagio.DEPTH_INFO)
    assert decoded.header.stamp.sec == 42 and decoded.header.frame_id == 'cam'
    np.testing.assert_array_equal(decoded.anchors, [1.0, 2.0])
    assert (decoded.anchor_mode, decoded.width, decoded.latency_ms) == ('auto', 7, 3.5)


def test_the_bags_camera_motion_goes_out_as_odometry(rclpy_context):
    """``--motion-hint``: each image's pose and the twist from the previous one (real DDS)."""
    try:
        from nav_msgs.msg import Odometry
        from rclpy.type_support import check_for_type_support

        check_for_type_support(Odometry)
    except Exception as exc:  # ImportError, or UnsupportedTypeSupport without its libraries
        pytest.skip(f'nav_msgs is not usable here: {exc}')
    import rclpy

    from metric_solver_ros.bagtf import PoseLookup
    from metric_solver_ros.temporal_filter import CameraMotion

    def pose(x, yaw):
        out = np.eye(4)
        out[:3, :3] = [[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]]
        out[0, 3] = x
        return out

    poses = [pose(0.1 * i, 0.02 * i) for i in range(3)]
    lookup = PoseLookup([(i * 100_000_000, 'map', 'cam', p, False)
                         for i, p in enumerate(poses)])
    node = rclpy.create_node('odometry_feed_test')
    received = []
    node.create_subscription(Odometry, '/feed_test/odom', received.append, 10)
    feed = replay._OdometryFeed(node.create_publisher(Odometry, '/feed_test/odom', 10), lookup,
                                'cam')
    try:
        assert wait_for(lambda: feed.publisher.get_subscription_count() > 0, 10.0)
        for i in range(3):
            feed.publish(i * 100_000_000)  # the first has no twist yet: nothing goes out
        feed.publish(5_000_000_000)  # no pose then: nothing
        assert feed.published == 2
        assert wait_for(lambda: (rclpy.spin_once(node, timeout_sec=0.05), len(received))[1] == 2,
                        10.0)
        msg = received[-1]
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (0, 200_000_000)
        assert msg.header.frame_id == 'map' and msg.child_frame_id == 'cam'
        assert msg.pose.pose.position.x == pytest.approx(0.2)
        motion = CameraMotion.from_twist(
            (msg.twist.twist.linear.x, msg.twist.twist.linear.y, msg.twist.twist.linear.z),
            (msg.twist.twist.angular.x, msg.twist.twist.angular.y, msg.twist.twist.angular.z),
            0.1)
        np.testing.assert_allclose(motion.matrix(), np.linalg.inv(poses[1]) @ poses[2],
                                   atol=1e-9)
    finally:
        node.destroy_node()
