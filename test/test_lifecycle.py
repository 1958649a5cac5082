"""The lifecycle node (``depth_lifecycle_node``) driven through its standard services over DDS."""

from __future__ import annotations

import time

import pytest
from lifecycle_msgs.msg import Transition
from node_harness import DiagnosticsRecorder, LifecycleClient, camera_image, small_checkpoint

from metric_solver_ros.node_client import DepthNodeClient, NodeProcess, publish_until, stamp_ns
from metric_solver_ros.node_client import wait_for as wait

WIDTH, HEIGHT = 160, 120
INTRINSICS = (150.0, 152.0, 79.5, 59.5)
OUTPUTS = ('depth', 'anchor_mask', 'points', 'depth_info', 'depth_camera_info')


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    return small_checkpoint(tmp_path_factory.mktemp('model') / 'small.safetensors')


def send_frame(client: DepthNodeClient, stamp: int) -> None:
    client.publish_camera_info(WIDTH, HEIGHT, INTRINSICS, stamp)
    client.publish_image(camera_image(WIDTH, HEIGHT), stamp)


def answered(client: DepthNodeClient, stamp: int) -> bool:
    return any(stamp_ns(m) == stamp for m in client.messages('depth_info'))


def nothing_published(client: DepthNodeClient, diagnostics: DiagnosticsRecorder,
                      first_stamp: int) -> None:
    """Send frames for ~2 s (a camera at 5 Hz) and check that nothing came out."""
    for i in range(10):
        send_frame(client, first_stamp + i * 1_000_000)
        time.sleep(0.2)
    time.sleep(0.5)
    assert {key: len(client.messages(key)) for key in OUTPUTS} == dict.fromkeys(OUTPUTS, 0)
    assert diagnostics.statuses() == []


def test_failing_configure_stays_unconfigured_and_shutdown_exits(tmp_path, rclpy_context):
    bad = tmp_path / 'broken.safetensors'
    bad.write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"not": "json')
    ns = '/life_bad'
    process = NodeProcess(['-r', f'__ns:={ns}', '-p', f'checkpoint:={bad}', '-p', 'device:=cpu'],
                          tmp_path / 'node.log', lifecycle=True)
    client = DepthNodeClient(ns)
    life = LifecycleClient(client, f'{ns}/metric_solver')
    try:
        assert life.get.wait_for_service(timeout_sec=60.0), process.output()
        assert life.state() == 'unconfigured'
        assert not life.transition(Transition.TRANSITION_CONFIGURE)
        assert life.state() == 'unconfigured' and process.alive()
        output = process.output()
        assert 'configure failed: cannot start' in output and str(bad) in output, output
        assert not client.set_anchor.service_is_ready()  # no endpoints without a model
        assert life.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        assert process.process.wait(10.0) == 0, process.output()
    finally:
        client.close()
        process.stop()


def test_transitions_load_publish_stop_and_release(checkpoint, tmp_path, rclpy_context):
    ns = '/life'
    process = NodeProcess(['-r', f'__ns:={ns}', '-p', f'checkpoint:={checkpoint}',
                           '-p', 'device:=cpu', '-p', 'points_stride:=2'],
                          tmp_path / 'node.log', lifecycle=True)
    client = DepthNodeClient(ns)
    life = LifecycleClient(client, f'{ns}/metric_solver')
    diagnostics = DiagnosticsRecorder(client, f'{ns}/metric_solver: depth')
    try:
        assert life.get.wait_for_service(timeout_sec=60.0), process.output()
        assert life.state() == 'unconfigured'
        assert client.get_parameter('anchor') == 10.0  # parameters exist from the start
        assert 'ready:' not in process.output()  # the model is loaded by configure

        assert life.transition(Transition.TRANSITION_CONFIGURE), process.output()
        assert life.state() == 'inactive' and 'ready:' in process.output()
        assert client.wait_ready(60.0, process.alive), process.output()
        nothing_published(client, diagnostics, 1_000_000_000)  # inactive: images ignored

        assert life.transition(Transition.TRANSITION_ACTIVATE)
        assert life.state() == 'active'
        assert publish_until(lambda: send_frame(client, 5_000_000_000),
                             lambda: answered(client, 5_000_000_000), 20.0)
        assert wait(lambda: all(client.messages(key) for key in OUTPUTS), 10.0)
        assert diagnostics.wait(lambda s: True, 10.0) is not None

        assert life.transition(Transition.TRANSITION_DEACTIVATE)
        assert life.state() == 'inactive'
        client.clear()
        diagnostics.clear()
        nothing_published(client, diagnostics, 6_000_000_000)  # subscriptions stay, silent

        assert life.transition(Transition.TRANSITION_CLEANUP)
        assert life.state() == 'unconfigured'
        # the topics and the service went with the model
        assert wait(lambda: not client.set_anchor.service_is_ready()
                    and client.pub_image.get_subscription_count() == 0, 10.0)

        assert life.transition(Transition.TRANSITION_CONFIGURE)
        assert life.transition(Transition.TRANSITION_ACTIVATE)
        assert publish_until(lambda: send_frame(client, 9_000_000_000),
                             lambda: answered(client, 9_000_000_000), 30.0)
        assert life.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert process.process.wait(10.0) == 0, process.output()
    finally:
        client.close()
        process.stop()
    assert 'shut down from active: exiting' in process.output()


def test_cleanup_releases_the_model(checkpoint, rclpy_context):
    """In-process: after cleanup nothing holds the network any more (its memory is free)."""
    import gc
    import weakref

    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from metric_solver_ros.lifecycle_node import MetricSolverLifecycleNode

    ns = '/life_inprocess'
    node = MetricSolverLifecycleNode(namespace=ns, parameter_overrides=[
        Parameter('checkpoint', value=str(checkpoint)), Parameter('device', value='cpu'),
        Parameter('anchor', value=2)])
    success = TransitionCallbackReturn.SUCCESS
    try:
        assert node.core.engine is None
        assert node.trigger_configure() == success
        model = weakref.ref(node.core.engine.model)
        # the anchors' descriptors now name the model's pool
        assert '[0.5, 120] m' in node.describe_parameter('anchor').additional_constraints
        assert node.trigger_activate() == success
        assert node.trigger_deactivate() == success
        assert node.trigger_cleanup() == success
        gc.collect()
        assert node.core.engine is None and model() is None
        assert not [p for p in list(node.publishers) if p.topic_name.startswith(f'{ns}/depth')]
        assert not list(node.subscriptions)
        assert node.trigger_shutdown() == success and node.core.finished.is_set()
    finally:
        node.destroy_node()
