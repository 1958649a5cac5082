"""The node as its own process, driven over real DDS (issue 5's integration tests)."""

from __future__ import annotations

import array
import math
import signal
import threading
import time

import numpy as np
import pytest
from node_harness import DiagnosticsRecorder, camera_image, small_checkpoint, status_values

from metric_solver_ros.node_client import DepthNodeClient as Probe
from metric_solver_ros.node_client import (
    NodeProcess,
    cloud_xyz,
    image_array,
    publish_until,
    stamp_ns,
    wait_for,
)
from metric_solver_ros.process_life import ERROR_LOG_PERIOD_S

NS = '/cam'
WIDTH, HEIGHT = 160, 120
INTRINSICS = (150.0, 152.0, 79.5, 59.5)
STRIDE = 2


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    return small_checkpoint(tmp_path_factory.mktemp('model') / 'small.safetensors')


@pytest.fixture(scope='module')
def node(checkpoint, tmp_path_factory, rclpy_context):
    log = tmp_path_factory.mktemp('node') / 'node.log'
    process = NodeProcess(['-r', f'__ns:={NS}', '-p', f'checkpoint:={checkpoint}',
                           '-p', 'device:=cpu', '-p', 'anchor:=10.0',
                           '-p', f'points_stride:={STRIDE}'], log)
    probe = Probe(NS)
    try:
        assert probe.wait_ready(60.0, process.alive), process.output()
        yield process, probe
    finally:
        probe.close()
        code, _ = process.stop()
        print(process.output())


def send_frame(probe: Probe, stamp: int, rgb: np.ndarray | None = None,
               with_info: bool = True) -> None:
    rgb = camera_image(WIDTH, HEIGHT) if rgb is None else rgb
    if with_info:
        probe.publish_camera_info(rgb.shape[1], rgb.shape[0], INTRINSICS, stamp)
    probe.publish_image(rgb, stamp)


ALL_OUTPUTS = ('depth', 'anchor_mask', 'points', 'depth_info', 'depth_camera_info')


def find_outputs(probe: Probe, stamp: int, keys=ALL_OUTPUTS) -> dict | None:
    """The latest message of each output for the frame ``stamp``, or None if one is missing."""
    found = {}
    for key in keys:
        hits = [m for m in probe.messages(key) if stamp_ns(m) == stamp]
        if not hits:
            return None
        found[key] = hits[-1]
    return found


def request(probe: Probe, stamp: int, keys=ALL_OUTPUTS, **frame) -> dict:
    """Send a frame until its outputs arrive; return them.

    Best-effort images can be lost right after discovery, so the frame is sent again every
    second, as a camera would.
    """
    done = publish_until(lambda: send_frame(probe, stamp, **frame),
                         lambda: find_outputs(probe, stamp, keys) is not None, 20.0)
    assert done, {k: [stamp_ns(m) for m in probe.messages(k)] for k in keys}
    return find_outputs(probe, stamp, keys)


def test_every_output_has_the_right_encoding_size_and_header(node):
    process, probe = node
    stamp = 1_000_000_000
    out = request(probe, stamp)
    depth, mask = out['depth'], out['anchor_mask']
    assert (depth.encoding, depth.width, depth.height) == ('32FC1', WIDTH, HEIGHT)
    assert depth.step == WIDTH * 4 and len(depth.data) == WIDTH * HEIGHT * 4
    assert (mask.encoding, mask.width, mask.height) == ('mono8', WIDTH, HEIGHT)
    for msg in out.values():
        assert msg.header.frame_id == 'camera_optical'
    values = image_array(depth)
    assert values.dtype == np.float32
    assert np.all((values > 0) | np.isnan(values))
    assert set(np.unique(image_array(mask))) <= {0, 255}
    info_cam = out['depth_camera_info']
    assert (info_cam.width, info_cam.height) == (WIDTH, HEIGHT)
    assert list(info_cam.k)[:3] == [INTRINSICS[0], 0.0, INTRINSICS[2]]
    info = out['depth_info']
    assert info.anchor == pytest.approx(10.0) and list(info.anchors) == [pytest.approx(10.0)]
    assert (info.width, info.height) == (WIDTH, HEIGHT)
    assert 0.0 <= info.near_fraction <= 1.0
    near = image_array(mask) == 255
    assert info.near_fraction == pytest.approx(near.mean(), abs=1e-6)
    finite = values[np.isfinite(values)]
    if finite.size:
        assert info.min_depth == pytest.approx(finite.min())
        assert info.max_depth == pytest.approx(finite.max())
        assert info.median_depth == pytest.approx(np.median(finite))
    assert info.inference_ms > 0 and info.anchor_mode == 'fixed'


def test_point_cloud_matches_hand_computed_back_projection(node):
    process, probe = node
    stamp = 2_000_000_000
    out = request(probe, stamp, keys=('depth', 'points'))
    depth = image_array(out['depth'])
    cloud = out['points']
    assert (cloud.height, cloud.width) == (math.ceil(HEIGHT / STRIDE), math.ceil(WIDTH / STRIDE))
    assert [f.name for f in cloud.fields] == ['x', 'y', 'z', 'rgb'] and not cloud.is_dense
    fx, fy, cx, cy = INTRINSICS
    xyz = cloud_xyz(cloud)
    for row in range(0, cloud.height, 7):
        for col in range(0, cloud.width, 9):
            v, u = row * STRIDE, col * STRIDE
            z = float(depth[v, u])
            expected = ((u - cx) * z / fx, (v - cy) * z / fy, z)
            if math.isfinite(z):
                np.testing.assert_allclose(xyz[row, col], expected, rtol=1e-5, atol=1e-5)
            else:
                assert np.isnan(xyz[row, col]).all()


def test_anchor_moves_by_parameter_topic_and_service(node):
    from std_msgs.msg import Float32

    from metric_solver_ros.srv import SetAnchor

    process, probe = node
    results = probe.set_parameters(anchor=2.0)
    assert results[0].successful, results[0].reason
    assert request(probe, 3_000_000_000, keys=('depth_info',))['depth_info'].anchor == 2.0

    probe.pub_anchor.publish(Float32(data=40.0))
    assert wait_for(lambda: probe.get_parameter('anchor') == 40.0, 10.0)
    assert request(probe, 4_000_000_000, keys=('depth_info',))['depth_info'].anchor == 40.0

    response = probe.call(probe.set_anchor, SetAnchor.Request(anchor=6.0))
    assert response.success and response.anchor == pytest.approx(6.0)
    assert probe.get_parameter('anchor') == 6.0
    assert request(probe, 5_000_000_000, keys=('depth_info',))['depth_info'].anchor == 6.0


def test_multi_anchor_fusion_is_reported(node):
    process, probe = node
    results = probe.set_parameters(anchors=[2.0, 10.0, 40.0])
    assert results[0].successful, results[0].reason
    try:
        info = request(probe, 6_000_000_000, keys=('depth_info',))['depth_info']
        assert list(info.anchors) == [2.0, 10.0, 40.0] and info.anchor == 40.0
    finally:
        assert probe.set_parameters(anchors=[])[0].successful


@pytest.mark.parametrize('bad', [0.0, -2.0, float('nan'), float('inf'), 1000.0, 0.1])
def test_invalid_anchors_are_refused_and_the_previous_stays(node, bad):
    from std_msgs.msg import Float32

    from metric_solver_ros.srv import SetAnchor

    process, probe = node
    assert probe.set_parameters(anchor=4.0)[0].successful
    response = probe.call(probe.set_anchor, SetAnchor.Request(anchor=bad))
    assert not response.success and response.message
    assert response.anchor == pytest.approx(4.0)
    result = probe.set_parameters(anchor=bad)[0]
    assert not result.successful and result.reason
    probe.pub_anchor.publish(Float32(data=bad))
    assert probe.get_parameter('anchor') == 4.0
    stamp = 7_000_000_000 + int(abs(bad) * 1000 if math.isfinite(bad) else 999)
    assert request(probe, stamp, keys=('depth_info',))['depth_info'].anchor == 4.0
    assert process.alive()


def test_string_anchor_and_read_only_parameters_are_refused(node):
    process, probe = node
    result = probe.set_parameters(anchor='far')[0]
    assert not result.successful and 'number' in result.reason
    result = probe.set_parameters(device='cuda')[0]
    assert not result.successful and 'read-only' in result.reason.lower()


def test_auto_and_roi_modes_follow_the_documented_rule(node):
    """The node's auto / roi anchor equals AnchorSelector replayed on its published depth."""
    from metric_solver_ros.anchor_modes import AnchorSelector
    from metric_solver_ros.model import DEFAULT_ANCHOR_POOL_M

    process, probe = node
    for mode, roi, first in (('auto', [0, 0, 0, 0], 20), ('roi', [10, 20, 60, 40], 30)):
        # The random test model answers about anchor / 2 everywhere: from 6 m the rule moves
        # down to 4 m (3 m <= 0.8 x 4 m) after two frames.
        # anchor_mode first: an anchor alone is refused while the mode picks it (auto, roi)
        assert all(r.successful for r in probe.set_parameters(anchor_mode='fixed', anchor=6.0,
                                                               roi=roi))
        assert probe.set_parameters(anchor_mode=mode)[0].successful
        stamps = [(first + i) * 1_000_000_000 for i in range(5)]
        for stamp in stamps:
            request(probe, stamp, keys=('depth', 'depth_info'))
        # Every processed image (a frame may have been sent more than once) updated the node's
        # rule once, in the order its outputs arrived: replay the rule on the same depths.
        depths = [m for m in probe.messages('depth') if stamp_ns(m) in stamps]
        infos = [m for m in probe.messages('depth_info') if stamp_ns(m) in stamps]
        assert len(depths) == len(infos) >= len(stamps)
        selector = AnchorSelector(DEFAULT_ANCHOR_POOL_M, 6.0)
        seen = set()
        for depth, info in zip(depths, infos, strict=True):
            assert info.anchor_mode == mode and stamp_ns(depth) == stamp_ns(info)
            assert info.anchor == pytest.approx(selector.current_m), (mode, stamp_ns(info))
            seen.add(info.anchor)
            selector.update(image_array(depth), tuple(roi) if mode == 'roi' else None)
        assert seen == {6.0, 4.0}, f'{mode}: {seen}'
    # A roi with no pixel in the image (set for a larger camera): the anchor stays, with a
    # warning, instead of jumping to the largest anchor of the pool.
    assert probe.set_parameters(anchor_mode='fixed', anchor=2.0)[0].successful
    assert probe.set_parameters(roi=[1000, 1000, 50, 50], anchor_mode='roi')[0].successful
    for i in range(3):
        request(probe, (40 + i) * 1_000_000_000, keys=('depth_info',))
    assert wait_for(lambda: 'has no pixel in the' in process.output(), 10.0)
    assert {m.anchor for m in probe.messages('depth_info')
            if stamp_ns(m) >= 40_000_000_000} == {2.0}
    assert probe.set_parameters(anchor_mode='fixed', anchor=10.0)[0].successful


def test_an_image_sent_before_its_camera_info_gets_its_own(node):
    # image_transport publishes the image, then its info: with a new focal length (a zoom) the
    # frame must not go out with the previous frame's intrinsics under its stamp.
    process, probe = node
    request(probe, 50_000_000_000, keys=('depth_camera_info',))

    def image_then_info(stamp: int, intrinsics) -> list:
        def send() -> None:
            probe.publish_image(camera_image(WIDTH, HEIGHT), stamp)
            time.sleep(0.005)
            probe.publish_camera_info(WIDTH, HEIGHT, intrinsics, stamp)

        assert publish_until(send, lambda: any(
            stamp_ns(m) == stamp for m in probe.messages('depth_camera_info')), 20.0)
        return [m.k[0] for m in probe.messages('depth_camera_info') if stamp_ns(m) == stamp]

    for i in range(4):  # the node learns that this camera's info follows its image in time
        image_then_info(50_100_000_000 + i * 100_000_000, INTRINSICS)
    zoomed = (300.0, 304.0, 79.5, 59.5)
    assert set(image_then_info(51_000_000_000, zoomed)) == {zoomed[0]}


def test_anchor_change_redecodes_the_last_frame(node):
    from metric_solver_ros.srv import SetAnchor

    process, probe = node
    assert probe.set_parameters(anchor=10.0)[0].successful
    stamp = 8_000_000_000
    assert not request(probe, stamp, keys=('depth_info',))['depth_info'].redecoded
    probe.clear()
    asked = time.monotonic()
    assert probe.call(probe.set_anchor, SetAnchor.Request(anchor=1.0)).success

    # No new image: the last frame comes again, re-decoded with the new anchor, under its stamp.
    def redecoded():
        return next((m for m in probe.messages('depth_info')
                     if stamp_ns(m) == stamp and m.anchor == 1.0), None)

    assert wait_for(lambda: redecoded() is not None, 10.0)
    elapsed_ms = (time.monotonic() - asked) * 1e3
    info = redecoded()
    # latency from the anchor request, not from the old stamp (8 s after 1970)
    assert info.redecoded and 0 < info.latency_ms < elapsed_ms + 50, (info.latency_ms,
                                                                      elapsed_ms)
    assert probe.set_parameters(anchor=10.0)[0].successful


def test_an_explicit_anchor_ends_auto_mode_and_says_so(node):
    from std_msgs.msg import Float32

    from metric_solver_ros.srv import SetAnchor

    process, probe = node
    assert probe.set_parameters(anchor_mode='auto')[0].successful
    response = probe.call(probe.set_anchor, SetAnchor.Request(anchor=2.0))
    assert response.success and response.anchor == pytest.approx(2.0)
    assert 'anchor_mode was auto, now fixed' in response.message
    assert probe.get_parameter('anchor_mode') == 'fixed' and probe.get_parameter('anchor') == 2.0
    info = request(probe, 60_000_000_000, keys=('depth_info',))['depth_info']
    assert (info.anchor_mode, info.anchor) == ('fixed', 2.0)
    # the parameter alone would be overridden at the next frame: refused, with the way out
    assert probe.set_parameters(anchor_mode='roi')[0].successful
    result = probe.set_parameters(anchor=4.0)[0]
    assert not result.successful and 'anchor_mode is roi' in result.reason
    assert 'set anchor_mode to fixed first' in result.reason
    # the topic switches, as the service does, and says so in the log
    probe.pub_anchor.publish(Float32(data=4.0))
    assert wait_for(lambda: probe.get_parameter('anchor_mode') == 'fixed', 10.0)
    assert probe.get_parameter('anchor') == 4.0
    assert wait_for(lambda: 'anchor topic: anchor_mode was roi, now fixed' in process.output(),
                    5.0)
    assert probe.set_parameters(anchor=10.0)[0].successful


def test_fusion_rule_and_temporal_filter_are_dynamic_parameters(node):
    from metric_solver_ros.model.fusion import DEFAULT_FUSION

    process, probe = node
    assert probe.get_parameter('fusion') == DEFAULT_FUSION
    assert probe.set_parameters(fusion='finest')[0].successful
    result = probe.set_parameters(fusion='mean')[0]
    assert not result.successful and 'fusion must be one of' in result.reason
    assert probe.get_parameter('fusion') == 'finest'
    assert probe.set_parameters(fusion=DEFAULT_FUSION)[0].successful
    assert probe.get_parameter('temporal_filter') == 'off'
    assert probe.set_parameters(temporal_filter='full')[0].successful
    for stamp in (71_000_000_000, 71_100_000_000):  # the second frame is filtered
        depth = image_array(request(probe, stamp, keys=('depth', 'points'))['depth'])
        assert np.isfinite(depth).any()
    result = probe.set_parameters(temporal_filter='kalman')[0]
    assert not result.successful and 'temporal_filter must be one of' in result.reason
    assert probe.set_parameters(temporal_filter='off')[0].successful
    result = probe.set_parameters(depth_encoding='16UC1')[0]
    assert not result.successful and 'read-only' in result.reason.lower()


def test_diagnostics_report_the_node_and_its_levels(node, checkpoint):
    from diagnostic_msgs.msg import DiagnosticStatus

    from metric_solver_ros.diagnostics import KEYS

    process, probe = node
    diagnostics = DiagnosticsRecorder(probe, f'{NS}/metric_solver: depth')
    stop = threading.Event()

    def stream() -> None:  # a 5 Hz camera
        stamp = 61_000_000_000
        while not stop.is_set():
            send_frame(probe, stamp)
            stamp += 200_000_000
            time.sleep(0.2)

    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    try:
        ok = diagnostics.wait(lambda s: s.level == DiagnosticStatus.OK
                              and float(status_values(s)['rate_hz']) > 0, 30.0)
        assert ok is not None, [(s.level, s.message) for s in diagnostics.statuses()]
        values = status_values(ok)
        assert list(values) == list(KEYS) and ok.hardware_id == 'cpu'
        assert (values['device'], values['precision']) == ('cpu', 'float32')
        assert values['model'] == str(checkpoint) and values['anchor'] == '10'
        assert float(values['latency_p50_ms']) > 0 and float(values['inference_p50_ms']) > 0
        assert float(values['latency_p95_ms']) >= float(values['latency_p50_ms'])
        assert int(values['frames_skipped']) >= 0
        # WARN below the expected rate
        assert probe.set_parameters(expected_rate_hz=1000.0)[0].successful
        warn = diagnostics.wait(lambda s: s.level == DiagnosticStatus.WARN
                                and 'below expected_rate_hz 1000 Hz' in s.message, 10.0)
        assert warn is not None, [(s.level, s.message) for s in diagnostics.statuses()]
        assert probe.set_parameters(expected_rate_hz=0.0)[0].successful
        # ERROR after an engine failure: an image the engine refuses (aspect ratio above 8:1)
        thin = camera_image(WIDTH, HEIGHT)[:4]
        assert publish_until(lambda: probe.publish_image(thin, 70_000_000_000), lambda: (
            diagnostics.wait(lambda s: s.level == DiagnosticStatus.ERROR, 0.0) is not None))
        error = diagnostics.wait(lambda s: s.level == DiagnosticStatus.ERROR, 0.0)
        assert 'engine failed' in error.message and 'aspect ratio' in error.message
    finally:
        stop.set()
        streamer.join()
    # no image for 2 s while someone (this probe) is subscribed
    assert diagnostics.wait(lambda s: f'no image on {NS}/image for' in s.message, 10.0)


def test_broken_images_do_not_kill_the_node(node):
    from sensor_msgs.msg import Image

    process, probe = node
    rgb = camera_image(WIDTH, HEIGHT)
    cases = [('rgb8', WIDTH * 3, b'\x00' * 10, 'data holds 10 bytes'),
             ('rgb8', 7, rgb.tobytes(), 'shorter than one row'),
             ('16UC1', WIDTH * 2, b'\x00' * WIDTH * 2 * HEIGHT, "encoding '16UC1'"),
             ('weird', WIDTH * 3, rgb.tobytes(), "encoding 'weird'"),
             ('rgb8', WIDTH * 3, rgb[:4].tobytes(), 'aspect ratio above')]  # 4 rows
    for encoding, step, data, reason in cases:
        rows = len(data) // step if reason == 'aspect ratio above' else HEIGHT
        msg = Image(height=rows, width=WIDTH, encoding=encoding, step=step)
        msg.header.stamp.sec = 9
        msg.data = data
        # Sent again every second until the node has said why it dropped it (best effort).
        assert publish_until(lambda m=msg: probe.pub_image.publish(m),
                             lambda r=reason: r in process.output(), 20.0), reason
    stamp = 10_000_000_000
    assert request(probe, stamp, keys=('depth',))
    assert process.alive()


def test_16uc1_depth_and_compressed_images_under_a_remap(checkpoint, tmp_path, rclpy_context):
    # image_transport's convention: the compressed stream of `image` is `<image>/compressed`,
    # so one remap of `image` serves both transports.
    import cv2
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage

    ns, camera = '/cam16', '/cam16_camera/color/image_raw'
    process = NodeProcess(['-r', f'__ns:={ns}', '-p', f'checkpoint:={checkpoint}',
                           '-p', 'device:=cpu', '-p', 'depth_encoding:=16UC1',
                           '-p', 'image_transport:=compressed', '-r', f'image:={camera}'],
                          tmp_path / 'node.log')
    probe = Probe(ns)
    pub = probe.node.create_publisher(CompressedImage, f'{camera}/compressed',
                                      qos_profile_sensor_data)
    ok, jpeg = cv2.imencode('.jpg', cv2.cvtColor(camera_image(WIDTH, HEIGHT), cv2.COLOR_RGB2BGR))
    assert ok

    def frame(sec: int) -> dict:
        msg = CompressedImage(format='jpeg')
        msg.header.stamp.sec, msg.header.frame_id = sec, 'camera_optical'
        msg.data = array.array('B', jpeg.tobytes())
        keys = ('depth', 'depth_info')
        assert publish_until(lambda: pub.publish(msg), lambda: find_outputs(
            probe, sec * 1_000_000_000, keys) is not None, 20.0), process.output()
        return find_outputs(probe, sec * 1_000_000_000, keys)

    try:
        assert probe.set_anchor.wait_for_service(timeout_sec=60.0), process.output()
        assert wait_for(lambda: pub.get_subscription_count() > 0, 30.0), process.output()
        assert probe.pub_compressed.get_subscription_count() == 0  # not `<ns>/image/compressed`
        assert wait_for(lambda: all(p > 0 for p in probe.publisher_counts()), 30.0)
        out = frame(1)
        depth, info = out['depth'], out['depth_info']
        assert (depth.encoding, depth.step, depth.width) == ('16UC1', WIDTH * 2, WIDTH)
        mm = image_array(depth)
        assert mm.dtype == np.uint16 and np.all(mm > 0)  # this model: a few metres everywhere
        # millimetres: the frame's statistics [m] (depth_info) to within the rounding
        assert abs(int(mm.min()) - info.min_depth * 1000) <= 0.5 + 1e-3
        assert abs(int(mm.max()) - info.max_depth * 1000) <= 0.5 + 1e-3
        assert abs(float(np.median(mm)) - info.median_depth * 1000) <= 1.0
        # beyond the far limit (+inf in 32FC1): 0, REP 118's "no depth"
        limit_m = float(info.median_depth)
        assert probe.set_parameters(far_limit=limit_m)[0].successful
        out = frame(2)
        mm, info = image_array(out['depth']), out['depth_info']
        zeros = int((mm == 0).sum())
        assert 0 < zeros == pytest.approx(info.far_fraction * mm.size, abs=1)
        assert int(mm.max()) <= round(limit_m * 1000)
        assert "image /cam16_camera/color/image_raw/compressed (compressed)" in process.output()
    finally:
        probe.close()
        process.stop(signal.SIGTERM)


def test_parameter_type_errors_name_the_parameter_and_the_type(tmp_path, rclpy_context):
    # `flip_tta: 'yes'` (a string, as a quoted YAML value or some distros' parsers give it):
    # rclpy said "expected '1' got '4'" on some distros.
    params = tmp_path / 'params.yaml'
    params.write_text("/**:\n  ros__parameters:\n    flip_tta: 'yes'\n")
    process = NodeProcess(['--params-file', str(params), '-p', 'device:=cpu'],
                          tmp_path / 'node.log')
    assert process.process.wait(60) == 1
    output = process.output()
    process.stop()
    assert "parameter flip_tta must be a boolean (true or false), got 'yes'" in output, output
    assert 'ready:' not in output


def test_no_camera_info_means_depth_but_no_points(checkpoint, tmp_path, rclpy_context):
    ns = '/cam_noinfo'
    # (also: cuda_graphs on the CPU is accepted with a warning, not an error)
    process = NodeProcess(['-r', f'__ns:={ns}', '-p', f'checkpoint:={checkpoint}',
                           '-p', 'device:=cpu', '-p', 'cuda_graphs:=true'], tmp_path / 'node.log')
    probe = Probe(ns)
    try:
        assert probe.set_anchor.wait_for_service(timeout_sec=60.0), process.output()
        assert 'cuda_graphs: true has no effect on cpu' in process.output()
        assert wait_for(lambda: probe.pub_image.get_subscription_count() > 0, 30.0)
        assert wait_for(lambda: all(p > 0 for p in probe.publisher_counts()), 30.0)
        start = time.monotonic()
        for i in range(3):
            request(probe, (i + 1) * 1_000_000_000, keys=('depth', 'depth_info'),
                    with_info=False)
        elapsed_s = time.monotonic() - start
        assert probe.messages('points') == [] and probe.messages('depth_camera_info') == []
        # Rate-limited, not one line per frame: at most one line per ERROR_LOG_PERIOD_S window
        # (one window when quiet; a loaded machine can stretch the three frames over more).
        warnings = process.output().count('no camera_info received yet')
        assert 1 <= warnings <= 1 + int(elapsed_s // ERROR_LOG_PERIOD_S), (warnings, elapsed_s)
    finally:
        probe.close()
        code, elapsed = process.stop(signal.SIGTERM)
    assert code == 0 and elapsed < 2.0, (code, elapsed, process.output())


def test_qos_override_of_one_link_leaves_the_others(checkpoint, tmp_path, rclpy_context):
    # rclpy writes an override into the profile object it is given: with one shared profile,
    # making the image link reliable made camera_info reliable too (a best-effort camera_info
    # publisher then never reached the node), and the same for the outputs.
    from rclpy.qos import ReliabilityPolicy

    ns = '/cam_qos'
    override = 'qos_overrides.{}.{}.reliability:={}'
    process = NodeProcess(['-r', f'__ns:={ns}', '-p', f'checkpoint:={checkpoint}',
                           '-p', 'device:=cpu',
                           '-p', override.format(f'{ns}/image', 'subscription', 'reliable'),
                           '-p', override.format(f'{ns}/depth/camera_info', 'publisher',
                                                 'best_effort')], tmp_path / 'node.log')
    probe = Probe(ns)
    graph = probe.node

    def reliability(kind: str, topic: str) -> ReliabilityPolicy | None:
        get = (graph.get_subscriptions_info_by_topic if kind == 'sub'
               else graph.get_publishers_info_by_topic)
        infos = [i for i in get(f'{ns}/{topic}') if i.node_name == 'metric_solver']
        return infos[0].qos_profile.reliability if infos else None

    links = {('sub', 'image'): ReliabilityPolicy.RELIABLE,
             ('sub', 'camera_info'): ReliabilityPolicy.BEST_EFFORT,
             ('pub', 'depth'): ReliabilityPolicy.RELIABLE,
             ('pub', 'depth/camera_info'): ReliabilityPolicy.BEST_EFFORT,
             ('pub', 'anchor_mask'): ReliabilityPolicy.RELIABLE,
             ('pub', 'points'): ReliabilityPolicy.RELIABLE}
    try:
        assert probe.set_anchor.wait_for_service(timeout_sec=60.0), process.output()
        assert wait_for(lambda: all(reliability(*link) is not None for link in links), 30.0)
        assert {link: reliability(*link) for link in links} == links
    finally:
        probe.close()
        process.stop(signal.SIGTERM)


def test_a_second_signal_during_shutdown_does_not_abort(tmp_path, rclpy_context):
    # systemd's SIGTERM then launch's SIGINT, or Ctrl-C twice: the second signal used to raise
    # KeyboardInterrupt inside the teardown, and the interpreter's exit then aborted (-6).
    # The bundled model with flip_tta on a 640x480 image: ~0.1 s a frame on this CPU, so the
    # signals come while the worker is inside torch (the teardown waits for it).
    ns = '/cam_signals'
    process = NodeProcess(['-r', f'__ns:={ns}', '-p', 'device:=cpu', '-p', 'flip_tta:=true'],
                          tmp_path / 'node.log')
    probe = Probe(ns)
    try:
        assert probe.set_anchor.wait_for_service(timeout_sec=60.0), process.output()
        big = camera_image(640, 480)
        assert request(probe, 1_000_000_000, keys=('depth',), rgb=big, with_info=False)
        probe.publish_image(big, 2_000_000_000)  # a frame in flight
        time.sleep(0.02)
        process.process.send_signal(signal.SIGINT)
        time.sleep(0.02)
        process.process.send_signal(signal.SIGINT)
        process.process.wait(10.0)
    finally:
        probe.close()
        code, _ = process.stop(signal.SIGINT)
    assert code == 0, process.output()[-3000:]


def test_bad_checkpoint_refuses_to_start(tmp_path, rclpy_context):
    bad = tmp_path / 'broken.safetensors'
    bad.write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"not": "json')
    process = NodeProcess(['-p', f'checkpoint:={bad}', '-p', 'device:=cpu'],
                          tmp_path / 'node.log')
    assert process.process.wait(60) == 1
    output = process.output()
    process.stop()
    assert 'cannot start' in output and str(bad) in output



def test_the_engines_own_log_lines_reach_the_nodes_log(checkpoint, tmp_path, rclpy_context):
    """The engine logs through Python's logging; the node forwards it to its rclpy logger."""
    import torch

    if torch.cuda.is_available():
        pytest.skip('device auto logs its fallback only where CUDA is missing')
    process = NodeProcess(['-r', '__ns:=/cam_logs', '-p', f'checkpoint:={checkpoint}',
                           '-p', 'device:=auto'], tmp_path / 'node.log')
    try:
        assert wait_for(lambda: 'ready: model' in process.output() or not process.alive(),
                        60.0), process.output()
    finally:
        process.stop()
    assert 'ready: model' in process.output(), process.output()
    assert ('[cam_logs.metric_solver]: device auto: CUDA is not available, using the CPU'
            in process.output()), process.output()


def _odometry_type():
    """nav_msgs/Odometry with its type support, or skip (the ros-nav-msgs wheel is missing)."""
    try:
        from nav_msgs.msg import Odometry
        from rclpy.type_support import check_for_type_support

        check_for_type_support(Odometry)
    except Exception as exc:  # ImportError, or UnsupportedTypeSupport without its libraries
        pytest.skip(f'nav_msgs is not usable here: {exc}')
    return Odometry


def test_odometry_saying_still_holds_the_published_scale(checkpoint, tmp_path, rclpy_context):
    """A still robot: the temporal filter holds the scale that blind it only smooths."""
    odometry_type = _odometry_type()
    ns = '/odom_cam'
    process = NodeProcess(['-r', f'__ns:={ns}', '-p', f'checkpoint:={checkpoint}',
                           '-p', 'device:=cpu', '-p', 'anchor:=10.0',
                           '-p', 'odometry_topic:=odom'], tmp_path / 'node.log')
    probe = Probe(ns)
    image = camera_image(WIDTH, HEIGHT).astype(np.float32)
    try:
        assert probe.wait_ready(60.0, process.alive), process.output()
        odometry = probe.node.create_publisher(odometry_type, f'{ns}/odom', 10)
        assert wait_for(lambda: odometry.get_subscription_count() > 0, 10.0), process.output()
        assert probe.get_parameter('odometry_topic') == 'odom'
        assert not probe.set_parameters(odometry_topic='other')[0].successful  # read-only

        def levels(start_s: int, still: bool) -> list[float]:
            """The ln median depth of frames whose brightness wobbles (the model follows it)."""
            out = []
            for k in range(8):
                stamp = start_s * 1_000_000_000 + k * 100_000_000
                if still:  # zero twist, stamped with the image
                    msg = odometry_type()
                    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
                    odometry.publish(msg)
                rgb = np.clip(image * (1.0 + 0.35 * math.sin(1.3 * k)), 0, 255).astype(np.uint8)
                depth = image_array(request(probe, stamp, keys=('depth',), rgb=rgb)['depth'])
                out.append(float(np.log(np.median(depth[np.isfinite(depth)]))))
            return out[2:]  # the hold starts at the third frame (still_frames)

        raw = levels(300, still=False)  # temporal_filter off
        assert probe.set_parameters(temporal_filter='scale')[0].successful
        held = levels(400, still=True)
        blind = levels(500, still=False)  # the last odometry is 100 s old: unknown
        assert np.std(raw) > 1e-4, raw  # the model does follow the brightness
        assert np.std(held) < 0.1 * np.std(raw), (held, raw)
        assert np.std(blind) > 3 * np.std(held), (blind, held)
    finally:
        probe.close()
        process.stop()
