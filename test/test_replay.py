"""``metric-solver replay`` into a real node process over DDS, recorded into real bags."""

from __future__ import annotations

import argparse
import contextlib
import json

import numpy as np
import pytest
from node_harness import small_checkpoint

from metric_solver_ros import bagio
from metric_solver_ros.commands import eval as eval_command
from metric_solver_ros.commands import replay
from metric_solver_ros.node_client import NodeProcess, wait_for

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

    out = tmp_path / 'eval'
    assert summary['eval_command'].endswith(f'--pred-topic {NS}/depth')
    assert eval_command.run(_parse(eval_command, [
        '--bag', record, '--image-topic', IMAGE, '--depth-topic', DEPTH,
        '--pred-topic', f'{NS}/depth', '--cap', 10, '--out', out])) == 0
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['frames'] == FRAMES
    assert metrics['results']['pred_topic']['n_frames'] == FRAMES
    assert metrics['config']['pairing']['max_abs_dt_ms'] == 0.0


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
    with pytest.raises(ValueError, match='exists'):
        replay.run(_parse(replay, ['--bag', bag, '--record', bag]))
    with pytest.raises(ValueError, match='--rate'):
        replay.run(_parse(replay, ['--bag', bag, '--rate', 0]))


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
