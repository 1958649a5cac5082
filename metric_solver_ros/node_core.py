"""What the plain and the lifecycle ``metric_solver`` node share: :class:`DepthNodeCore`.

Topics (relative names, remappable; see README "Topics, parameters, services"):

- in: ``image`` (sensor_msgs/Image) or ``<image>/compressed`` (``image_transport:
  compressed``, image_transport's convention: ``<image>`` is the resolved ``image`` topic),
  ``camera_info``, ``anchor`` (std_msgs/Float32, metres), and with ``odometry_topic`` that
  topic (nav_msgs/Odometry: the temporal filter's stillness hint);
- out: ``depth`` (32FC1 m, REP 117, or 16UC1 mm, REP 118), ``depth/camera_info``,
  ``anchor_mask`` (mono8, 255 = near), ``points`` (PointCloud2, organised), ``depth_info``
  (metric_solver_ros/DepthInfo), ``/diagnostics`` (1 Hz);
- service ``set_anchor`` (metric_solver_ros/SetAnchor).

Life, in the lifecycle's words (the plain node runs the first three in its constructor):
construction declares the parameters; :meth:`~DepthNodeCore.configure` loads the model, checks
the parameters against it and creates the endpoints and the worker; :meth:`~DepthNodeCore.
activate` starts publishing; :meth:`~DepthNodeCore.deactivate` stops it (subscriptions stay,
images are ignored); :meth:`~DepthNodeCore.cleanup` destroys the endpoints and releases the
model and its memory.

Threads: executor callbacks only store messages. One worker thread owns the engine and runs the
network on the latest image (a newer image replaces a pending one, so there is never a backlog),
then publishes. Anchor changes from the parameter, the topic and the service all become a
``set_parameters`` call, validated once in :meth:`DepthNodeCore._on_set_parameters`.
"""

from __future__ import annotations

import copy
import gc
import math
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Float32

from metric_solver_ros import messages
from metric_solver_ros.anchor_modes import AnchorSelector, RoiOutsideImage
from metric_solver_ros.backends import BackendError
from metric_solver_ros.camera_info_pairing import CameraInfoPairing, PairedInfo
from metric_solver_ros.conversions import (
    MessageError,
    compressed_to_rgb,
    header_stamp_ns,
    image_to_rgb,
    stamp_to_ns,
)
from metric_solver_ros.depth_stream import DepthStream
from metric_solver_ros.diagnostics import PERIOD_S, DepthStatistics, diagnostic_array
from metric_solver_ros.engine import (
    DepthEngine,
    DepthResult,
    EngineError,
    EngineOutOfMemory,
    PointsRequest,
)
from metric_solver_ros.mailbox import Mailbox
from metric_solver_ros.msg import DepthInfo
from metric_solver_ros.node_parameters import (
    declare_parameters,
    describe_anchor_pool,
    dynamic_values,
    settings_from,
)
from metric_solver_ros.parameters import SPECS, RuntimeSettings, validate_changes
from metric_solver_ros.process_life import (
    StartupError,
    ThrottledLog,
    forward_package_logs,
    ros_log_writer,
    transport_warning,
)
from metric_solver_ros.srv import SetAnchor
from metric_solver_ros.temporal_filter import MotionFromOdometry

#: Out-of-memory frames in a row before the engine gives up resolution (then the GPU).
OOM_STREAK = 2
#: Longest wait for the frame in flight when the model is released (cleanup) [s].
CLEANUP_JOIN_S = 60.0
#: Longest wait for the frame in flight when the process ends [s] (README, "Transport").
EXIT_JOIN_S = 1.5


def _sorted_anchors(anchors_m: Sequence[float]) -> tuple[float, ...]:
    """The anchors' check before a model is loaded: numbers only (the pool comes later)."""
    return tuple(sorted({float(a) for a in anchors_m}))


def _odometry_type() -> type:
    """nav_msgs/Odometry, imported only when ``odometry_topic`` is set (ros-nav-msgs)."""
    try:
        from nav_msgs.msg import Odometry
    except ImportError as exc:
        raise StartupError(f'odometry_topic needs nav_msgs (ros-<distro>-nav-msgs, or the '
                           f'ros-nav-msgs wheel): {exc}') from exc
    return Odometry


def _precision(engine: DepthEngine) -> str:
    return str(engine.dtype).replace('torch.', '')


def _free_memory(on_cuda: bool) -> None:
    """Collect a model no longer referenced and hand its CUDA memory back to the driver."""
    gc.collect()
    if on_cuda:
        import torch

        torch.cuda.empty_cache()  # else torch's caching allocator keeps it for this process


class DepthNodeCore:
    """Metric depth, anchor mask and point cloud from a camera stream, on a given rclpy node.

    Args:
        node: The ``rclpy`` Node or LifecycleNode it works for (parameters, endpoints, clock).

    Raises:
        StartupError: If a parameter override has the wrong type or value.

    Attributes:
        engine: The loaded model, or None before :meth:`configure` / after :meth:`cleanup`.
        fixed: The read-only parameters' values.
        finished: Set by :meth:`shutdown`: the process may end.
    """

    def __init__(self, node: Any) -> None:
        self._node = node
        self._log = ThrottledLog(node.get_logger())
        # the engine's own log lines (ONNX export, backend and thread choices) on this node's log
        forward_package_logs(ros_log_writer(node.get_logger()))
        self._lock = threading.Lock()  # guards _settings and _selector
        self._publishing = threading.Lock()  # held while a result goes out; deactivate waits
        self.fixed, values = declare_parameters(node)
        self._settings = settings_from(values, _sorted_anchors)
        self._stream = DepthStream(self._settings.temporal_filter)
        # odometry_topic: the message type now (a missing nav_msgs fails the start at once)
        self._odometry_type = _odometry_type() if self.fixed['odometry_topic'] else None
        self._odometry = MotionFromOdometry() if self._odometry_type else None
        self.engine: DepthEngine | None = None
        self._selector: AnchorSelector | None = None
        self._active = False
        self.finished = threading.Event()
        self._stats = DepthStatistics()
        self._mailbox = Mailbox()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._endpoints: list[tuple[Callable[[Any], Any], Any]] = []  # (destroy, handle)
        self._model_name = ''
        self.image_topic = node.resolve_topic_name('image')
        if self.fixed['image_transport'] == 'compressed':
            self.image_topic += '/compressed'  # image_transport's name for the same stream
        node.add_on_set_parameters_callback(self._on_set_parameters)

    # ------------------------------------------------------------------------ life

    def configure(self) -> None:
        """Load the model, check the parameters against it, create endpoints and worker.

        Raises:
            StartupError: If the model cannot be loaded on the device or a parameter does not
                fit it; nothing stays loaded then.
        """
        engine = self._load_engine()
        try:
            settings = settings_from(dynamic_values(self._node), engine.validate_anchors)
        except StartupError as exc:
            error, on_cuda, engine = exc, engine.device.type == 'cuda', None
        else:
            error = None
        if error is not None:
            _free_memory(on_cuda)
            raise error
        describe_anchor_pool(self._node, engine.pool_m)
        with self._lock:
            self.engine, self._settings = engine, settings
            self._selector = AnchorSelector(engine.pool_m, settings.anchor)
        self._apply_engine_settings(settings)
        self._pairing = CameraInfoPairing(self._log)
        # The last frame processed (re-decoded when the anchor changes): header, camera info, rgb.
        self._last_frame: tuple[Any, PairedInfo | None, Any] | None = None
        self._oom_streak = 0
        self._told_distortion = False  # the lens-distortion note is logged once
        self._mailbox, self._stop = Mailbox(), threading.Event()
        self._create_endpoints()
        self._worker = threading.Thread(target=self._work, args=(self._mailbox, self._stop),
                                        name='metric_solver_worker', daemon=True)
        self._worker.start()
        warning = transport_warning()
        if warning:
            self._node.get_logger().warning(warning)
        if self.fixed['cuda_graphs'] and not engine.cuda_graphs:
            self._node.get_logger().warning(f'cuda_graphs: true has no effect on {engine.device}')
        self._log_ready()

    def activate(self) -> None:
        """Start processing images and publishing (also /diagnostics)."""
        self._stats.restart()
        self._active = True

    def deactivate(self) -> None:
        """Stop publishing: nothing goes out once this returns; images are ignored."""
        with self._publishing:
            self._active = False
        self._mailbox.clear()

    def cleanup(self) -> None:
        """Stop the worker, destroy the endpoints, release the model and its memory."""
        self.deactivate()
        self._stop_worker(CLEANUP_JOIN_S)
        for destroy, handle in reversed(self._endpoints):
            destroy(handle)
        self._endpoints.clear()
        with self._lock:
            engine, self.engine, self._selector = self.engine, None, None
        self._last_frame = None
        if engine is not None:
            on_cuda, engine = engine.device.type == 'cuda', None  # the last reference
            _free_memory(on_cuda)

    def shutdown(self) -> None:
        """Stop and release everything from any state; :attr:`finished` is set."""
        self.cleanup()
        self.finished.set()

    def stop(self) -> None:
        """Process end: unsubscribe, stop the worker (finishing at most the frame in flight).

        Unsubscribing first lets the peers' writers stop sending while the worker finishes, so
        that fewer messages are mid-transfer when the participant closes (README, "Transport").
        The model is left to the process's end.
        """
        for subscription in list(self._node.subscriptions):
            self._node.destroy_subscription(subscription)
        self._stop_worker(EXIT_JOIN_S)

    def _stop_worker(self, timeout_s: float) -> None:
        self._stop.set()
        self._mailbox.wake()
        if self._worker is not None and self._worker.is_alive():
            self._worker.join(timeout=timeout_s)
        self._worker = None

    def _load_engine(self) -> DepthEngine:
        from metric_solver_ros.checkpoint import CheckpointError, default_model_path

        fixed = self.fixed
        path = fixed['checkpoint'] or str(default_model_path())
        self._model_name = path if fixed['checkpoint'] else f'bundled default ({path})'
        try:
            return DepthEngine.from_checkpoint(
                path, device=fixed['device'], precision=fixed['precision'],
                input_size=fixed['input_size'] or None, resize_mode=fixed['resize_mode'],
                compile=fixed['compile'], cuda_graphs=fixed['cuda_graphs'],
                backend=fixed['backend'], num_threads=fixed['num_threads'],
                multi_anchor_resolution=fixed['multi_anchor_resolution'],
                channels_last=fixed['channels_last'])
        except (CheckpointError, EngineError, BackendError, FileNotFoundError) as exc:
            raise StartupError(f'cannot start: {exc}') from exc

    def _create_endpoints(self) -> None:
        """Subscriptions, publishers, the service and the diagnostics timer (QoS overridable)."""
        node = self._node
        overrides = QoSOverridingOptions.with_default_policies()

        def keep(destroy: Callable[[Any], Any], handle: Any) -> Any:
            self._endpoints.append((destroy, handle))
            return handle

        # A fresh profile per endpoint: rclpy writes `qos_overrides.<topic>...` values into the
        # profile object it is given, so a shared one (let alone rclpy's global
        # qos_profile_sensor_data) would carry one topic's override to the others.
        def subscribe(kind: type, topic: str, callback: Callable[[Any], None]) -> None:
            keep(node.destroy_subscription, node.create_subscription(
                kind, topic, callback, copy.copy(qos_profile_sensor_data),
                qos_overriding_options=overrides))

        def publisher(kind: type, topic: str) -> Any:
            return keep(node.destroy_publisher, node.create_publisher(
                kind, topic, QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE),
                qos_overriding_options=overrides))

        compressed = self.fixed['image_transport'] == 'compressed'
        subscribe(CompressedImage if compressed else Image, self.image_topic, self._on_image)
        subscribe(CameraInfo, 'camera_info', self._pairing.add)
        keep(node.destroy_subscription,
             node.create_subscription(Float32, 'anchor', self._on_anchor_topic, 10))
        if self._odometry is not None:
            subscribe(self._odometry_type, self.fixed['odometry_topic'], self._on_odometry)
        self._pub_depth = publisher(Image, 'depth')
        self._pub_depth_info_cam = publisher(CameraInfo, 'depth/camera_info')
        self._pub_mask = publisher(Image, 'anchor_mask')
        self._pub_points = publisher(PointCloud2, 'points')
        self._pub_info = keep(node.destroy_publisher,
                              node.create_publisher(DepthInfo, 'depth_info', 10))
        self._pub_diagnostics = keep(node.destroy_publisher,
                                     node.create_publisher(DiagnosticArray, '/diagnostics', 10))
        keep(node.destroy_service, node.create_service(SetAnchor, 'set_anchor',
                                                       self._on_set_anchor))
        keep(node.destroy_timer, node.create_timer(PERIOD_S, self._publish_diagnostics))

    def _log_ready(self) -> None:
        engine = self.engine
        graphs = ' with CUDA graphs' if engine.cuda_graphs else ''
        depth = ('16UC1 [mm] (0 = no depth)' if self.fixed['depth_encoding'] == '16UC1'
                 else '32FC1 [m] (NaN undefined, +inf beyond the far limit)')
        self._node.get_logger().info(
            f'ready: model {self._model_name} (preset {engine.config.preset}), device '
            f'{engine.device}{graphs}, precision {_precision(engine)}, backend '
            f'{engine.backend_description}, input short side {engine.input_size} px '
            f'({engine.resize_mode}), anchor '
            f'pool {", ".join(f"{a:g}" for a in engine.pool_m)} m, anchors in effect '
            f'{self._describe_anchors()}, outputs: depth {depth}, anchor_mask mono8, points '
            f'[m], image {self.image_topic} ({self.fixed["image_transport"]})')

    # ------------------------------------------------------------------------ parameters

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """The one validation path for every runtime change (parameter, topic, service)."""
        # Others (qos_overrides.*, use_sim_time) are rclpy's own and pass through.
        changes = {p.name: p.value for p in params if p.name in SPECS}
        if not changes:
            return SetParametersResult(successful=True)
        with self._lock:
            # without a model (lifecycle: unconfigured) the pool is checked at configure
            check = self.engine.validate_anchors if self.engine else _sorted_anchors
            try:
                new = validate_changes(self._settings, changes, check)
            except ValueError as exc:
                self._log.warn(f'param:{",".join(changes)}', f'refused: {exc}')
                return SetParametersResult(successful=False, reason=str(exc))
            old, self._settings = self._settings, new
            anchors_changed = (new.fixed_anchors != old.fixed_anchors
                               or new.anchor_mode != old.anchor_mode)
            if anchors_changed and self._selector is not None:
                self._selector.reset(new.anchor)
            if anchors_changed:
                self._stream.anchor_set()
        self._apply_engine_settings(new)
        if anchors_changed and self.engine is not None:
            # at most once a second: a planner may set it at control rate
            self._node.get_logger().info(f'anchors now {self._describe_anchors()}',
                                         throttle_duration_sec=1.0)
            if new.redecode_on_anchor_change and self._active and self.engine.has_frame:
                self._mailbox.request_redecode(self._node.get_clock().now().nanoseconds)
        return SetParametersResult(successful=True)

    def _apply_engine_settings(self, settings: RuntimeSettings) -> None:
        engine = self.engine
        if engine is not None:
            engine.flip_tta = settings.flip_tta
            engine.far_limit_m = settings.far_limit or None
            engine.fusion = settings.fusion
        self._stream.set_filter(settings.temporal_filter)

    def _request_anchor(self, anchor_m: float) -> tuple[SetParametersResult, str]:
        """Set one anchor through the parameter path; a fusion list is cleared.

        An explicit anchor ends automatic selection: anchor_mode auto or roi becomes fixed in
        the same atomic change (else the mode would replace the anchor at the next frame).

        Returns:
            The result and, when it succeeded, what else changed ('' when nothing did).
        """
        with self._lock:
            settings = self._settings
        params = [Parameter('anchor', Parameter.Type.DOUBLE, float(anchor_m))]
        note = ''
        if settings.anchor_mode != 'fixed':
            params.append(Parameter('anchor_mode', Parameter.Type.STRING, 'fixed'))
            note = (f'anchor_mode was {settings.anchor_mode}, now fixed: an explicit anchor '
                    f'ends automatic selection')
        if settings.anchors:
            params.append(Parameter('anchors', Parameter.Type.DOUBLE_ARRAY, []))
        result = self._node.set_parameters_atomically(params)
        return result, note if result.successful else ''

    def _on_anchor_topic(self, msg: Float32) -> None:
        result, note = self._request_anchor(float(msg.data))
        if not result.successful:
            self._log.warn('anchor_topic', f'anchor topic: {result.reason}')
        elif note:
            self._node.get_logger().info(f'anchor topic: {note}')

    def _on_set_anchor(self, request: SetAnchor.Request,
                       response: SetAnchor.Response) -> SetAnchor.Response:
        result, note = self._request_anchor(float(request.anchor))
        response.success = bool(result.successful)
        response.message = note if result.successful else result.reason
        with self._lock:
            response.anchor = float(self._current_anchors()[-1])
        return response

    def _current_anchors(self) -> tuple[float, ...]:
        if self._settings.anchor_mode == 'fixed' or self._selector is None:
            return self._settings.fixed_anchors
        return (self._selector.current_m,)

    def _describe_anchors(self) -> str:
        anchors = ', '.join(f'{a:g}' for a in self._current_anchors())
        return f'[{anchors}] m ({self._settings.anchor_mode})'

    # ------------------------------------------------------------------------ worker

    def _on_image(self, msg: Any) -> None:
        if self._active:
            self._stats.image_received()
            self._mailbox.put_image(msg)

    def _on_odometry(self, msg: Any) -> None:
        twist = msg.twist.twist
        self._odometry.add(header_stamp_ns(msg),
                           (twist.linear.x, twist.linear.y, twist.linear.z),
                           (twist.angular.x, twist.angular.y, twist.angular.z))

    def _work(self, mailbox: Mailbox, stop: threading.Event) -> None:
        while not stop.is_set():
            job = mailbox.take(timeout_s=0.2)
            if job is None or stop.is_set():
                continue
            try:
                if job[0] == 'image':
                    self._process_image(job[1])
                else:
                    self._process_redecode(job[1])
            except Exception as exc:  # the node must keep serving whatever happens
                if stop.is_set() or not rclpy.ok():
                    return  # shutting down: publishers are gone
                self._stats.engine_failed(f'{type(exc).__name__}: {exc}')
                try:
                    self._log.warn(f'worker:{type(exc).__name__}',
                                   f'frame dropped: {type(exc).__name__}: {exc}', level='error')
                except Exception as log_exc:  # not even logging may end the worker
                    print(f'metric_solver_ros: frame dropped: {type(exc).__name__}: {exc} '
                          f'(logging failed: {log_exc})', file=sys.stderr, flush=True)

    def _points_request(self, settings: RuntimeSettings,
                        paired: PairedInfo | None) -> PointsRequest | None:
        if (paired is None or not settings.publish_points
                or self._pub_points.get_subscription_count() == 0):
            return None
        info = paired.info
        if not self._told_distortion and any(float(v) != 0.0 for v in info.d):
            self._told_distortion = True
            self._node.get_logger().warning(
                f'camera_info has lens distortion ({info.distortion_model}, d != 0): `points` '
                f'back-projects with the pinhole k and does not undistort, so points towards '
                f'the image edges are off unless the image is rectified (image_rect)')
        return PointsRequest(intrinsics=paired.intrinsics, stride=settings.points_stride,
                             max_range_m=settings.points_max_range or math.inf, with_rgb=True)

    def _process_image(self, msg: Any) -> None:
        try:
            rgb = compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else image_to_rgb(msg)
        except MessageError as exc:
            self._log.warn('bad_image', f'dropped image: {exc}')
            return
        height, width = rgb.shape[:2]
        paired = self._pairing.for_image(msg.header, width, height)
        with self._lock:
            settings = self._settings
            anchors = self._current_anchors()
        points = self._points_request(settings, paired)
        engine = self.engine
        result = self._run_engine(lambda: engine.infer(rgb, anchors, points=points),
                                  'dropped image')
        if result is None:
            return
        self._oom_streak = 0
        self._last_frame = (msg.header, paired, rgb)
        result = self._corrected(result, msg.header, anchors, settings)
        self._publish(result, msg.header, paired, settings)
        if settings.anchor_mode != 'fixed':
            self._follow_scene(result, settings)

    def _follow_scene(self, result: DepthResult, settings: RuntimeSettings) -> None:
        """anchor_mode auto / roi: update the anchor from this frame's depth."""
        with self._lock:
            before = self._selector.current_m
            try:
                after = self._selector.update(
                    result.depth_m, settings.roi_or_none if settings.anchor_mode == 'roi'
                    else None)
            except RoiOutsideImage as exc:
                after = before
                self._log.warn('roi_outside', f'anchor_mode roi: {exc}: anchor kept at '
                               f'{before:g} m; set `roi` within the image')
        if after != before:
            self._stream.anchor_switched(before)
            self._node.get_logger().info(f'{settings.anchor_mode} anchor: {before:g} m -> '
                                         f'{after:g} m')

    def _on_out_of_memory(self, exc: EngineOutOfMemory) -> None:
        """Drop the frame; after OOM_STREAK frames in a row, give up resolution (then the GPU)."""
        self._oom_streak += 1
        self._log.warn('oom', str(exc), level='error')
        if self._oom_streak >= OOM_STREAK:
            self._oom_streak = 0
            try:
                change = self.engine.degrade()
            except EngineError as final:
                self._log.warn('oom_final', f'cannot recover: {final}', level='error')
                return
            self._node.get_logger().warning(f'after {OOM_STREAK} out-of-memory frames in a '
                                            f'row: {change}')

    def _process_redecode(self, requested_ns: int) -> None:
        """Publish the last frame decoded with the anchors now in effect (under its stamp)."""
        if self._last_frame is None:
            return
        header, paired, rgb = self._last_frame
        with self._lock:
            settings = self._settings
            anchors = self._current_anchors()
        points = self._points_request(settings, paired)
        engine = self.engine

        def redecode() -> DepthResult:
            if engine.has_frame:
                return engine.redecode(anchors, points=points)
            # a setting change (flip_tta) dropped the cached features: encode again
            return engine.infer(rgb, anchors, points=points)

        result = self._run_engine(redecode, 're-decode dropped')
        if result is not None:
            result = self._corrected(result, header, anchors, settings)
            self._publish(result, header, paired, settings, requested_ns)

    def _corrected(self, result: DepthResult, header: Any, anchors: tuple[float, ...],
                   settings: RuntimeSettings) -> DepthResult:
        """The result after the scale handover and the temporal filter (``depth_stream``)."""
        engine = self.engine

        def decode_at(anchor_m: float) -> Any:
            redecoded = self._run_engine(lambda: engine.redecode((anchor_m,)), 'handover')
            return None if redecoded is None else redecoded.depth_m

        stamp_ns = stamp_to_ns(header.stamp)
        motion = None if self._odometry is None else self._odometry.motion(stamp_ns)
        return self._stream.correct(
            result, header.frame_id, stamp_ns, anchors, decode_at, settings.points_stride,
            settings.points_max_range or math.inf, camera_motion=motion)

    def _run_engine(self, call: Callable[[], DepthResult], what: str) -> DepthResult | None:
        """``call()``; None when the engine refused (logged as ``what``) or ran out of memory."""
        try:
            return call()
        except EngineOutOfMemory as exc:
            self._stats.engine_failed(str(exc))
            self._on_out_of_memory(exc)
        except EngineError as exc:
            self._stats.engine_failed(str(exc))
            self._log.warn('engine', f'{what}: {exc}')
        return None

    def _publish(self, result: DepthResult, header: Any, paired: PairedInfo | None,
                 settings: RuntimeSettings, requested_ns: int | None = None) -> None:
        """Publish a result: the outputs somebody subscribes to (``depth_info`` always).

        Every result leaves through here: a new image's, and a re-decode's (``requested_ns``:
        when its anchor change was asked for [ns]) under the old frame's header.
        """
        with self._publishing:
            if not self._active or self._stop.is_set():
                return
            depth = result.depth_m
            if self._pub_depth.get_subscription_count():
                self._pub_depth.publish(messages.depth_msg(header, depth,
                                                           self.fixed['depth_encoding']))
            if paired is not None and self._pub_depth_info_cam.get_subscription_count():
                self._pub_depth_info_cam.publish(
                    messages.depth_camera_info_msg(paired.info, header, depth.shape))
            if self._pub_mask.get_subscription_count():
                self._pub_mask.publish(messages.mask_msg(header, result.near))
            if result.points_m is not None:
                self._pub_points.publish(messages.cloud_msg(header, result.points_m,
                                                            result.points_rgb, result.cloud))
            info = messages.depth_info_msg(
                result, header, settings.anchor_mode,
                lambda: self._node.get_clock().now().nanoseconds, self._mailbox.dropped,
                requested_ns)
            self._pub_info.publish(info)
        self._stats.frame_published(info.latency_ms, info.inference_ms, info.redecoded)

    def _publish_diagnostics(self) -> None:
        """The timer's /diagnostics message (while active)."""
        engine = self.engine
        if not self._active or engine is None:
            return
        with self._lock:
            anchors = ', '.join(f'{a:g}' for a in self._current_anchors())
            expected_rate_hz = self._settings.expected_rate_hz
        facts = {'anchor': anchors, 'device': str(engine.device),
                 'precision': _precision(engine), 'model': self._model_name}
        outputs = (self._pub_depth, self._pub_depth_info_cam, self._pub_mask, self._pub_points,
                   self._pub_info)
        report = self._stats.report(facts, self._mailbox.dropped, expected_rate_hz,
                                    any(p.get_subscription_count() for p in outputs),
                                    self.image_topic)
        name = f'{self._node.get_fully_qualified_name()}: depth'
        self._pub_diagnostics.publish(diagnostic_array(
            report, name, str(engine.device), self._node.get_clock().now().to_msg()))
