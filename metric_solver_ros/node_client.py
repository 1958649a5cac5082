"""Drive a running ``metric_solver`` node from Python: start it, feed it, record its outputs.

Used by the demo, ``metric-solver replay``, the load benchmark and the integration tests, so that
all of them talk to the node the same way (real rclpy, real DDS). rclpy is imported only inside
the functions that need it, so :func:`percentiles` and :class:`NodeProcess` work without it.
"""

from __future__ import annotations

import array
import os
import pathlib
import queue
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from metric_solver_ros.bagio import DEPTH_INFO, IMAGE, POINT_CLOUD2
from metric_solver_ros.conversions import header_stamp_ns
from metric_solver_ros.process_life import ExitWatchdog

#: The node's outputs a :class:`ReplayLink` can receive: key -> (topic below the namespace,
#: message type).
NODE_OUTPUTS = {'depth': ('depth', IMAGE), 'anchor_mask': ('anchor_mask', IMAGE),
                'depth_info': ('depth_info', DEPTH_INFO), 'points': ('points', POINT_CLOUD2)}
#: History kept per output subscription of a :class:`ReplayLink` (reliable), far more than the
#: node publishes at once.
OUTPUT_QUEUE_DEPTH = 100


class NodeProcess:
    """``depth_node`` (or ``depth_lifecycle_node``) in a subprocess; output in a log file.

    Args:
        ros_args: Arguments after ``--ros-args``.
        log_path: Where the process's stdout and stderr go.
        env: Extra environment variables.
        lifecycle: Start the lifecycle node (``metric_solver_ros.lifecycle_node``).
    """

    def __init__(self, ros_args: list[str], log_path: pathlib.Path,
                 env: dict[str, str] | None = None, lifecycle: bool = False) -> None:
        self.log_path = log_path
        self._log = open(log_path, 'w')  # noqa: SIM115 - closed in stop()
        module = 'metric_solver_ros.lifecycle_node' if lifecycle else 'metric_solver_ros.node'
        command = [sys.executable, '-m', module, '--ros-args', *ros_args]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                        env={**os.environ, 'PYTHONUNBUFFERED': '1',
                                             **(env or {})})

    def output(self) -> str:
        """Everything the node printed so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.poll() is None

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 10.0) -> tuple[int, float]:
        """Send ``sig`` and wait; return (exit code, seconds it took to exit)."""
        start = time.monotonic()
        if self.alive():
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        elapsed = time.monotonic() - start
        self._log.close()
        output = self.output()
        if ExitWatchdog.MESSAGE in output:  # exited in time, but only by the watchdog: say so
            stuck = output[output.index(ExitWatchdog.MESSAGE):]
            warnings.warn(f'node process {self.process.pid}: {stuck[:4000]}', RuntimeWarning,
                          stacklevel=2)
        return self.process.returncode, elapsed


QUIESCE_S = 0.5
"""Seconds between unsubscribing and deleting a client node (``close_spun_node``)."""


def wait_for(predicate: Callable[[], bool], timeout_s: float, period_s: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout_s`` passes; return its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period_s)
    return predicate()


def matched_publishers(node, subscription, topic: str) -> int:
    """Publishers matched to ``subscription`` (DDS endpoint matching, not just the graph).

    The ROS graph (``count_publishers``) learns of a publisher before the subscription's reader
    has matched its writer; a reliable, volatile message published in between is lost. rclpy
    from Iron on reports the real matches (``Subscription.get_publisher_count``); on Humble the
    graph count is the best there is.
    """
    count = getattr(subscription, 'get_publisher_count', None)
    return count() if count is not None else node.count_publishers(topic)


def close_spun_node(node, executor, thread: threading.Thread, timeout_s: float = 5.0,
                    quiesce_s: float = QUIESCE_S) -> None:
    """Stop ``executor`` spinning in ``thread``, unsubscribe, let data stop, destroy ``node``.

    Destroying a node while another thread sits in the executor's wait makes rclpy defer
    ``rcl_node_fini`` to that thread: the node is then torn down at some later point, holding
    the GIL, after the caller may already have stopped the peers. Here it is gone when this
    returns.

    Before the node (with a process's last node, its DDS participant) is deleted, its
    subscriptions are destroyed and ``quiesce_s`` seconds pass: the peers' writers unmatch and
    stop sending, so no large message is half-way through a ``LARGE_DATA`` TCP channel when the
    participant closes it. That is the window of the Fast DDS 3.2 deadlock of deleting a
    participant whose channel is mid-read (README, "Transport"; fixed upstream in
    eProsima/Fast-DDS#6066): this narrows it, it cannot close it (a peer may still be sending
    discovery or a reliable repair). The tests also keep one node alive all session.
    """
    executor.shutdown(timeout_sec=timeout_s)
    thread.join(timeout_s)
    subscriptions = list(node.subscriptions)
    for subscription in subscriptions:
        node.destroy_subscription(subscription)
    if subscriptions and quiesce_s > 0:
        time.sleep(quiesce_s)
    node.destroy_node()


def publish_until(publish: Callable[[], None], done: Callable[[], bool],
                  timeout_s: float = 20.0, period_s: float = 1.0) -> bool:
    """Call ``publish`` every ``period_s`` (as a camera would) until ``done()`` or timeout.

    Best-effort samples sent right after discovery can be lost while a transport connects; a
    single publish is not a reliable request.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        publish()
        if wait_for(done, min(period_s, max(0.0, deadline - time.monotonic()))):
            return True
    return done()


class DepthNodeClient:
    """An rclpy node that feeds a running metric_solver node and records its outputs.

    Args:
        namespace: The namespace of the metric_solver node (its topics live there).
        name: Base name of this client node.
    """

    def __init__(self, namespace: str, name: str = 'depth_client') -> None:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
        from std_msgs.msg import Float32

        from metric_solver_ros.msg import DepthInfo
        from metric_solver_ros.srv import SetAnchor

        self.ns = namespace.rstrip('/')
        self.node = Node(f'{name}_{os.getpid()}_{id(self) % 10000}')
        self.pub_image = self.node.create_publisher(Image, f'{self.ns}/image',
                                                    qos_profile_sensor_data)
        self.pub_compressed = self.node.create_publisher(
            CompressedImage, f'{self.ns}/image/compressed', qos_profile_sensor_data)
        self.pub_info = self.node.create_publisher(CameraInfo, f'{self.ns}/camera_info',
                                                   qos_profile_sensor_data)
        self.pub_anchor = self.node.create_publisher(Float32, f'{self.ns}/anchor', 10)
        self.received: dict[str, list] = {k: [] for k in
                                          ('depth', 'depth_camera_info', 'anchor_mask', 'points',
                                           'depth_info')}
        self._lock = threading.Lock()
        self._subscriptions = {}
        for key, kind, topic in [('depth', Image, 'depth'),
                                 ('depth_camera_info', CameraInfo, 'depth/camera_info'),
                                 ('anchor_mask', Image, 'anchor_mask'),
                                 ('points', PointCloud2, 'points'),
                                 ('depth_info', DepthInfo, 'depth_info')]:
            self._subscriptions[f'{self.ns}/{topic}'] = self.node.create_subscription(
                kind, f'{self.ns}/{topic}', self._recorder(key), 10)
        self.set_anchor = self.node.create_client(SetAnchor, f'{self.ns}/set_anchor')
        from rcl_interfaces.srv import GetParameters, SetParameters

        self.set_params = self.node.create_client(SetParameters,
                                                  f'{self.ns}/metric_solver/set_parameters')
        self.get_params = self.node.create_client(GetParameters,
                                                  f'{self.ns}/metric_solver/get_parameters')
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()
        self._closed = False

    def _recorder(self, key: str):
        def record(msg) -> None:
            with self._lock:
                self.received[key].append(msg)
        return record

    def messages(self, key: str) -> list:
        """A copy of what arrived on an output so far."""
        with self._lock:
            return list(self.received[key])

    def clear(self) -> None:
        """Forget every received message."""
        with self._lock:
            for values in self.received.values():
                values.clear()

    def wait_ready(self, timeout_s: float = 60.0,
                   alive: Callable[[], bool] | None = None) -> bool:
        """Wait until the node's service and every link used by the tests are matched.

        Args:
            timeout_s: Give up after this long [s].
            alive: Returns False once the node process has died (stop waiting then).
        """
        alive = alive or (lambda: True)
        if not wait_for(lambda: self.set_anchor.service_is_ready() or not alive(), timeout_s):
            return False
        return (alive() and self.set_anchor.service_is_ready()
                and wait_for(lambda: (self.pub_image.get_subscription_count() > 0
                                      or self.pub_compressed.get_subscription_count() > 0)
                             and self.pub_info.get_subscription_count() > 0
                             and self.pub_anchor.get_subscription_count() > 0, timeout_s)
                and wait_for(lambda: all(p > 0 for p in self.publisher_counts()), timeout_s))

    def publisher_counts(self) -> list[int]:
        """How many publishers the node has matched to each of our subscriptions."""
        return [matched_publishers(self.node, sub, topic)
                for topic, sub in self._subscriptions.items()]

    def call(self, client, request, timeout_s: float = 10.0):
        """Call a service and wait for the response (None on timeout)."""
        future = client.call_async(request)
        wait_for(future.done, timeout_s)
        return future.result() if future.done() else None

    def set_parameters(self, **values):
        """Set parameters of the node under test through its standard service."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request(
            parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        return self.call(self.set_params, request).results

    def get_parameter(self, name: str):
        """The value of one parameter of the node under test."""
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        response = self.call(self.get_params, GetParameters.Request(names=[name]))
        return parameter_value_to_python(response.values[0])

    def publish_image(self, rgb: np.ndarray, stamp_ns: int, frame_id: str = 'camera_optical',
                      encoding: str = 'rgb8'):
        """Publish an image (and return the message)."""
        from sensor_msgs.msg import Image

        msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, is_bigendian=0)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        msg.header.frame_id = frame_id
        data = np.ascontiguousarray(rgb)
        msg.step = data.shape[1] * (data.shape[2] if data.ndim == 3 else 1) * data.itemsize
        buffer = array.array('B')
        buffer.frombytes(data.tobytes())
        msg.data = buffer
        self.pub_image.publish(msg)
        return msg

    def publish_camera_info(self, width: int, height: int, intrinsics, stamp_ns: int,
                            frame_id: str = 'camera_optical'):
        """Publish a pinhole camera_info (and return it)."""
        from sensor_msgs.msg import CameraInfo

        fx, fy, cx, cy = intrinsics
        msg = CameraInfo(width=width, height=height, distortion_model='plumb_bob')
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        msg.header.frame_id = frame_id
        msg.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
        msg.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        msg.d = [0.0] * 5
        self.pub_info.publish(msg)
        return msg

    def close(self) -> None:
        """Stop spinning and destroy the client node (idempotent)."""
        if self._closed:
            return
        self._closed = True
        close_spun_node(self.node, self._executor, self._thread)


def stamp_ns(msg) -> int:
    """A header stamp in nanoseconds (``conversions.header_stamp_ns``, the name tests use)."""
    return header_stamp_ns(msg)


def image_array(msg) -> np.ndarray:
    """The pixels of a 32FC1, 16UC1 or mono8 Image as a numpy array."""
    dtype = {'32FC1': np.float32, '16UC1': np.uint16, 'mono8': np.uint8}[msg.encoding]
    values = np.frombuffer(msg.data, dtype=dtype)
    return values.reshape(msg.height, msg.step // np.dtype(dtype).itemsize)[:, :msg.width]


def cloud_xyz(msg) -> np.ndarray:
    """The x, y, z of an organised PointCloud2 as [height, width, 3] float32."""
    offsets = {f.name: f.offset for f in msg.fields}
    raw = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.width, msg.point_step)
    return np.stack([raw[..., offsets[k]:offsets[k] + 4].copy().view(np.float32)[..., 0]
                     for k in 'xyz'], axis=-1)


def percentiles(values: Sequence[float], qs: Sequence[int] = (50, 95, 99),
                ndigits: int | None = None) -> dict[str, Any]:
    """Summary of a series of figures (latencies [ms], say): count, percentiles, mean and max.

    Args:
        values: The figures.
        qs: Percentiles wanted (each gives a key ``p<q>``).
        ndigits: Round every figure to this many decimals (None: unrounded).

    Returns:
        ``{'n': len(values), 'p50': ..., ..., 'mean': ..., 'max': ...}``; every figure is None
        when ``values`` is empty (strict JSON).
    """
    keys = [f'p{q}' for q in qs] + ['mean', 'max']
    if not len(values):
        return {'n': 0, **dict.fromkeys(keys)}
    data = np.asarray(values, dtype=np.float64)
    figures = [*np.percentile(data, list(qs)), data.mean(), data.max()]
    return {'n': len(values), **{key: float(value) if ndigits is None
                                 else round(float(value), ndigits)
                                 for key, value in zip(keys, figures, strict=True)}}


class ReplayLink:
    """Serialised messages in and out of a running node (``metric-solver replay``).

    An rclpy node that publishes already serialised images and camera infos to the node and
    receives its outputs serialised, each with its arrival time.

    Args:
        namespace: Namespace of the running metric_solver node (``/depth``).
        compressed: Publish ``CompressedImage`` on ``<ns>/image/compressed`` instead of
            ``Image`` on ``<ns>/image``.
        outputs: Keys of :data:`NODE_OUTPUTS` to subscribe to.
    """

    def __init__(self, namespace: str, compressed: bool, outputs: list[str]) -> None:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

        from metric_solver_ros.msg import DepthInfo

        kinds = {IMAGE: Image, DEPTH_INFO: DepthInfo, POINT_CLOUD2: PointCloud2}
        self.ns = namespace
        self.node = Node(f'metric_solver_replay_{os.getpid()}')
        self.image_topic = f'{namespace}/image' + ('/compressed' if compressed else '')
        self.pub_image = self.node.create_publisher(
            CompressedImage if compressed else Image, self.image_topic, qos_profile_sensor_data)
        self.pub_info = self.node.create_publisher(CameraInfo, f'{namespace}/camera_info',
                                                   qos_profile_sensor_data)
        #: (key, arrival time [ns, monotonic], serialised message) in arrival order.
        self.arrivals: queue.SimpleQueue = queue.SimpleQueue()
        self.output_topics = {key: f'{namespace}/{NODE_OUTPUTS[key][0]}' for key in outputs}
        qos = QoSProfile(depth=OUTPUT_QUEUE_DEPTH, reliability=ReliabilityPolicy.RELIABLE)
        self._subscriptions = {
            topic: self.node.create_subscription(kinds[NODE_OUTPUTS[key][1]], topic,
                                                 self._receiver(key), qos, raw=True)
            for key, topic in self.output_topics.items()}
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self._executor.spin()
        except ExternalShutdownException:
            pass  # the context was shut down under us (e.g. by another owner): stop receiving

    def _receiver(self, key: str) -> Callable[[bytes], None]:
        def receive(data: bytes) -> None:
            self.arrivals.put((key, time.monotonic_ns(), data))
        return receive

    def set_node_parameters(self, timeout_s: float = 10.0, **values: Any) -> str | None:
        """Set parameters of the running node (``<ns>/metric_solver``) through its service.

        Returns:
            None when every value was taken, else why not (the node's reason, or no service).
        """
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        client = self.node.create_client(SetParameters, f'{self.ns}/metric_solver/set_parameters')
        try:
            if not client.wait_for_service(timeout_sec=timeout_s):
                return f'no parameter service {self.ns}/metric_solver/set_parameters'
            future = client.call_async(SetParameters.Request(
                parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]))
            if not wait_for(future.done, timeout_s) or future.result() is None:
                return 'the node did not answer the parameter request'
            refused = [r.reason for r in future.result().results if not r.successful]
            return '; '.join(refused) if refused else None
        finally:
            self.node.destroy_client(client)

    def get_node_parameter(self, name: str, timeout_s: float = 10.0) -> Any:
        """A parameter's value on the running node (``<ns>/metric_solver``); None unanswered."""
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        client = self.node.create_client(GetParameters, f'{self.ns}/metric_solver/get_parameters')
        try:
            if not client.wait_for_service(timeout_sec=timeout_s):
                return None
            future = client.call_async(GetParameters.Request(names=[name]))
            if not wait_for(future.done, timeout_s) or future.result() is None:
                return None
            values = future.result().values
            return parameter_value_to_python(values[0]) if values else None
        finally:
            self.node.destroy_client(client)

    def missing_links(self, with_info: bool) -> list[str]:
        """Topics not matched yet: our publishers without the node, the node's outputs unseen."""
        missing = [] if self.pub_image.get_subscription_count() else [self.image_topic]
        if with_info and not self.pub_info.get_subscription_count():
            missing.append(f'{self.ns}/camera_info')
        missing += [t for t, sub in self._subscriptions.items()
                    if not matched_publishers(self.node, sub, t)]
        return missing

    def close(self) -> None:
        """Stop spinning and destroy the node."""
        close_spun_node(self.node, self._executor, self._thread)
