"""The node's parts that run without DDS: its inbox, its messages, its logs, latency figures."""

from __future__ import annotations

import dataclasses
import logging
import math
import threading

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from metric_solver_ros import messages
from metric_solver_ros.conversions import depth_to_16uc1, pack_cloud
from metric_solver_ros.engine import DepthResult
from metric_solver_ros.mailbox import Mailbox
from metric_solver_ros.node_client import cloud_xyz, image_array, percentiles
from metric_solver_ros.process_life import (
    PACKAGE_LOGGER,
    ThrottledLog,
    forward_package_logs,
    print_log_writer,
    ros_log_writer,
)


def test_mailbox_keeps_only_the_latest_image_and_counts_the_dropped():
    box = Mailbox()
    assert box.take(timeout_s=0.01) is None
    box.request_redecode()
    for frame in ('a', 'b', 'c'):
        box.put_image(frame)
    assert box.take(timeout_s=0.0) == ('image', 'c') and box.dropped == 2
    # the new frame already uses the new anchor: the pending re-decode went with it
    assert box.take(timeout_s=0.01) is None
    box.request_redecode(7)
    box.request_redecode(9)  # meets the pending one: its latency counts from the first
    assert box.take(timeout_s=0.0) == ('redecode', 7)
    assert box.take(timeout_s=0.01) is None
    box.request_redecode(11)
    box.clear()  # deactivated: nothing pending stays
    assert box.take(timeout_s=0.01) is None


def test_mailbox_wakes_the_waiting_worker():
    box = Mailbox()
    threading.Timer(0.05, box.put_image, args=('frame',)).start()
    assert box.take(timeout_s=10.0) == ('image', 'frame')


def header(sec: int = 0) -> Header:
    msg = Header(frame_id='camera_optical')
    msg.stamp.sec = sec
    return msg


def result() -> DepthResult:
    depth = np.array([[1.0, 2.0, np.inf], [np.nan, 4.0, 3.0]], np.float32)
    near = np.array([[True, True, False], [True, False, False]])
    return DepthResult(depth_m=depth, near=near, anchors_m=(2.0, 10.0),
                       timings_ms={'total': 12.5})


def test_image_messages_hold_the_arrays_under_the_input_header():
    frame = result()
    depth = messages.depth_msg(header(7), frame.depth_m)
    assert (depth.encoding, depth.width, depth.height, depth.step) == ('32FC1', 3, 2, 12)
    np.testing.assert_array_equal(image_array(depth), frame.depth_m)
    assert depth.header.stamp.sec == 7 and depth.header.frame_id == 'camera_optical'
    mask = messages.mask_msg(header(7), frame.near)
    assert mask.encoding == 'mono8'
    np.testing.assert_array_equal(image_array(mask), frame.near * 255)


def test_cloud_message_is_organised_with_nan_points():
    xyz = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    xyz[1, 2] = np.nan
    rgb = np.full((2, 3, 3), 7, np.uint8)
    cloud = messages.cloud_msg(header(), xyz, rgb)
    assert (cloud.height, cloud.width, cloud.point_step) == (2, 3, 16) and not cloud.is_dense
    assert [f.name for f in cloud.fields] == ['x', 'y', 'z', 'rgb']
    np.testing.assert_array_equal(cloud_xyz(cloud), xyz)


def test_depth_camera_info_keeps_the_cameras_description():
    info = CameraInfo(width=0, height=0, distortion_model='plumb_bob')
    info.k = [100.0, 0.0, 1.0, 0.0, 100.0, 1.0, 0.0, 0.0, 1.0]
    out = messages.depth_camera_info_msg(info, header(3), (2, 3))
    assert (out.width, out.height) == (3, 2)  # unset: the depth image's size
    assert list(out.k) == list(info.k) and out.header.stamp.sec == 3
    binned = CameraInfo(width=0, height=0, binning_x=2, binning_y=2)
    out = messages.depth_camera_info_msg(binned, header(), (2, 3))
    assert (out.width, out.height, out.binning_x) == (0, 0, 2)  # as the camera said it


def test_depth_info_message_reports_the_frame():
    frame = result()
    info = messages.depth_info_msg(frame, header(5), 'auto', lambda: 5_250_000_000,
                                   frames_skipped=4)
    assert info.anchor == 10.0 and list(info.anchors) == [2.0, 10.0]
    assert (info.near_fraction, info.far_fraction) == pytest.approx((0.4, 0.2))
    assert (info.min_depth, info.median_depth, info.max_depth) == (1.0, 2.5, 4.0)
    assert info.latency_ms == pytest.approx(250.0) and info.inference_ms == 12.5
    assert (info.anchor_mode, info.width, info.height, info.frames_skipped) == ('auto', 3, 2, 4)
    # no stamp, or no clock yet under use_sim_time: no latency rather than a wrong one
    for sec, now_ns in ((0, 5), (5, 0)):
        no_latency = messages.depth_info_msg(frame, header(sec), 'fixed', lambda n=now_ns: n, 0)
        assert math.isnan(no_latency.latency_ms)
    # statistics the engine computed with the frame (CUDA) are sent as they are
    given = dataclasses.replace(frame, statistics=(0.5, 0.25, 1.5, 2.0, 3.0))
    info = messages.depth_info_msg(given, header(5), 'auto', lambda: 5_250_000_000, 0)
    assert (info.near_fraction, info.far_fraction, info.min_depth, info.median_depth,
            info.max_depth) == (0.5, 0.25, 1.5, 2.0, 3.0)


def test_depth_statistics_hand_computed():
    frame = result()
    # 5 defined pixels; 2 near among them (the NaN one does not count); 1 at +inf
    assert messages.depth_statistics(frame.depth_m, frame.near) == (0.4, 0.2, 1.0, 2.5, 4.0)
    empty = messages.depth_statistics(np.full((2, 2), np.nan, np.float32),
                                      np.zeros((2, 2), bool))
    assert empty[:2] == (0.0, 0.0) and all(math.isnan(v) for v in empty[2:])


def test_the_packages_log_records_reach_the_writer_and_an_rclpy_logger(capfd):
    """The engine's Python log lines (ONNX export, thread choices) are not dropped."""
    from rclpy.logging import get_logger

    package = logging.getLogger(PACKAGE_LOGGER)
    handlers, level = list(package.handlers), package.level
    lines = []
    try:
        forward = forward_package_logs(lambda level, text: lines.append((level, text)))
        logger = logging.getLogger('metric_solver_ros.backends.graph')
        logger.info('encoder threads %d -> %d', 2, 1)
        logger.debug('a detail nobody asked for')
        assert lines == [(logging.INFO, 'encoder threads 2 -> 1')]
        # one forwarder per process: a second call points it elsewhere
        ros = ros_log_writer(get_logger('forward_test'))
        assert forward_package_logs(ros) is forward
        assert sum(isinstance(h, type(forward)) for h in package.handlers) == 1
        logger.warning('one-thread encoder unavailable')
        logger.info('and an info line after it (its own call site in rclpy)')
        logger.error('export failed')
        assert len(lines) == 1
        err = capfd.readouterr().err
        assert '[WARN]' in err and '[forward_test]: one-thread encoder unavailable' in err
        assert '[INFO]' in err and '[forward_test]: and an info line after it' in err
        assert '[ERROR]' in err and '[forward_test]: export failed' in err
    finally:
        package.handlers[:] = handlers
        package.setLevel(level)


def test_a_tools_package_log_lines_say_the_program_and_the_level(capsys):
    write = print_log_writer('metric-solver')
    write(logging.INFO, 'exporting the model to ONNX')
    write(logging.WARNING, 'one-thread encoder unavailable')
    write(logging.ERROR, 'export failed')
    assert capsys.readouterr().err.splitlines() == [
        'metric-solver: exporting the model to ONNX',
        'metric-solver: warning: one-thread encoder unavailable',
        'metric-solver: error: export failed']


def test_throttled_log_mixes_warnings_and_errors():
    # rclpy refuses a call site whose severity changes: with one call site for both levels,
    # an error after a warning (no camera_info, then any failed frame) raised in the worker
    # and killed it; a refused parameter after an error killed the executor.
    from rclpy.logging import get_logger

    log = ThrottledLog(get_logger('throttled_log_test'))
    log.warn('a', 'first a warning')
    log.warn('b', 'then an error', level='error')
    log.warn('c', 'and a warning again')


def test_percentiles_of_latencies():
    values = [float(v) for v in range(1, 101)]
    full = percentiles(values)
    assert full['n'] == 100 and full['max'] == 100.0 and full['mean'] == 50.5
    assert full['p50'] == pytest.approx(np.percentile(values, 50))
    assert full['p99'] == pytest.approx(np.percentile(values, 99))
    short = percentiles([1.0, 2.0, 4.0], (50, 99), ndigits=2)
    assert set(short) == {'n', 'p50', 'p99', 'mean', 'max'}
    assert short['p99'] == 3.96 and short['mean'] == 2.33
    assert percentiles([]) == {'n': 0, 'p50': None, 'p95': None, 'p99': None, 'mean': None,
                               'max': None}  # strict JSON: null, not NaN


def test_16uc1_depth_is_millimetres_with_0_for_no_depth():
    depth = np.array([[1.0, 0.0004, 0.0006, 65.535, 65.5354],
                      [65.5356, 70.0, np.inf, np.nan, -1.0]], np.float32)
    mm = depth_to_16uc1(depth)  # the one rule, also make-bag's (bagio)
    assert mm.dtype == np.uint16
    # REP 118: 0 = no depth, also for +inf and beyond 65.535 m (65535 mm)
    np.testing.assert_array_equal(mm, [[1000, 0, 1, 65535, 65535], [0, 0, 0, 0, 0]])
    msg = messages.depth_msg(header(3), depth, '16UC1')
    assert (msg.encoding, msg.step, msg.width, msg.height) == ('16UC1', 10, 5, 2)
    np.testing.assert_array_equal(image_array(msg), mm)
    assert messages.depth_msg(header(3), depth).encoding == '32FC1'  # the default


def test_redecoded_depth_info_measures_latency_from_the_anchor_request():
    frame = result()
    # the old frame's stamp is 5 s; the anchor was asked for at 9.9 s, published at 10 s
    info = messages.depth_info_msg(frame, header(5), 'fixed', lambda: 10_000_000_000, 0,
                                   requested_ns=9_900_000_000)
    assert info.redecoded and info.latency_ms == pytest.approx(100.0)
    assert info.header.stamp.sec == 5  # published under the original stamp
    fresh = messages.depth_info_msg(frame, header(5), 'fixed', lambda: 5_010_000_000, 0)
    assert not fresh.redecoded and fresh.latency_ms == pytest.approx(10.0)


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


FACTS = {'anchor': '10', 'device': 'cpu', 'precision': 'float32', 'model': 'm.safetensors'}


def test_diagnostic_statistics_rate_latency_and_levels():
    from metric_solver_ros.diagnostics import (
        ERROR,
        ERROR_HOLD_S,
        KEYS,
        OK,
        WARN,
        DepthStatistics,
    )

    clock = FakeClock()
    stats = DepthStatistics(clock=clock, window_s=5.0)
    for i in range(50):  # 10 Hz for 5 s, latencies 10..59 ms, inference 5 ms
        clock.now_s += 0.1
        stats.image_received()
        stats.frame_published(10.0 + i, 5.0, redecoded=False)
    stats.frame_published(1.0, 2.0, redecoded=True)  # a re-decode: no frame of the rate
    report = stats.report(FACTS, 3, expected_rate_hz=0.0, subscribed=True, image_topic='/i')
    assert report.level == OK and list(report.values) == list(KEYS)
    assert float(report.values['rate_hz']) == pytest.approx(10.0, abs=0.21)
    latencies = [10.0 + i for i in range(50)] + [1.0]
    assert float(report.values['latency_p50_ms']) == pytest.approx(
        np.percentile(latencies, 50), abs=0.05)
    assert float(report.values['latency_p95_ms']) == pytest.approx(
        np.percentile(latencies, 95), abs=0.05)
    assert report.values['inference_p50_ms'] == '5.0'
    assert report.values['frames_skipped'] == '3' and report.values['model'] == 'm.safetensors'

    slow = stats.report(FACTS, 3, expected_rate_hz=30.0, subscribed=True, image_topic='/i')
    assert slow.level == WARN and 'below expected_rate_hz 30 Hz' in slow.message

    clock.now_s += 2.5  # no image for 2.5 s: WARN only while someone is subscribed
    quiet = stats.report(FACTS, 3, expected_rate_hz=0.0, subscribed=True, image_topic='/i')
    assert quiet.level == WARN and 'no image on /i for 2.5 s' in quiet.message
    assert stats.report(FACTS, 3, 0.0, subscribed=False, image_topic='/i').level == OK

    stats.engine_failed('image of 160x4 px: aspect ratio above 8:1 is not supported')
    failed = stats.report(FACTS, 3, 0.0, subscribed=False, image_topic='/i')
    assert failed.level == ERROR and 'aspect ratio' in failed.message
    clock.now_s += ERROR_HOLD_S + 0.1  # the failure ages out
    assert stats.report(FACTS, 3, 0.0, subscribed=False, image_topic='/i').level == OK
    assert stats.report(FACTS, 3, 0.0, False, '/i').values['rate_hz'] == '0.00'


def test_diagnostic_array_holds_one_status_with_every_key():
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticStatus

    from metric_solver_ros.diagnostics import KEYS, WARN, HealthReport, diagnostic_array

    report = HealthReport(WARN, 'slow', {key: str(i) for i, key in enumerate(KEYS)})
    msg = diagnostic_array(report, '/depth/metric_solver: depth', 'cuda:0', Time(sec=4))
    (status,) = msg.status
    assert status.level == DiagnosticStatus.WARN and status.message == 'slow'
    assert status.name == '/depth/metric_solver: depth' and status.hardware_id == 'cuda:0'
    assert [(kv.key, kv.value) for kv in status.values] == [(k, str(i))
                                                            for i, k in enumerate(KEYS)]
    assert msg.header.stamp.sec == 4


def test_cloud_message_sends_a_packed_cloud_as_it_is():
    xyz = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    packed = pack_cloud(xyz, rgb).view(np.float32).reshape(2, 3, 4)
    from_host = messages.cloud_msg(header(), xyz, rgb)
    from_packed = messages.cloud_msg(header(), xyz * 0, None, cloud=packed)  # xyz, rgb unread
    assert bytes(from_packed.data) == bytes(from_host.data)
    assert [f.name for f in from_packed.fields] == ['x', 'y', 'z', 'rgb']
    assert (from_packed.point_step, from_packed.row_step) == (16, 48)
