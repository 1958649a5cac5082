"""The ``metric_solver`` ROS 2 node: a thin adapter over the inference engine.

Topics (relative names, remappable; see README "Topics, parameters, services"):

- in: ``image`` (sensor_msgs/Image) or ``image/compressed`` (``image_transport: compressed``),
  ``camera_info``, ``anchor`` (std_msgs/Float32, metres);
- out: ``depth`` (32FC1 m, REP 117), ``depth/camera_info``, ``anchor_mask`` (mono8, 255 = near),
  ``points`` (PointCloud2, organised), ``depth_info`` (metric_solver_ros/DepthInfo);
- service ``set_anchor`` (metric_solver_ros/SetAnchor).

Threads: executor callbacks only store messages. One worker thread owns the engine and runs the
network on the latest image (a newer image replaces a pending one, so there is never a backlog),
then publishes. Anchor changes from the parameter, the topic and the service all become a
``set_parameters`` call, validated once in :meth:`MetricSolverNode._on_set_parameters`.
"""

from __future__ import annotations

import array
import collections
import copy
import logging
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import numpy as np
import rclpy
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Float32

from metric_solver_ros.anchor_modes import AnchorSelector, RoiOutsideImage
from metric_solver_ros.conversions import (
    POINTFIELD_FLOAT32,
    MessageError,
    camera_info_image_size,
    camera_info_to_intrinsics,
    compressed_to_rgb,
    image_to_rgb,
    pack_cloud,
)
from metric_solver_ros.engine import (
    DepthEngine,
    DepthResult,
    EngineError,
    EngineOutOfMemory,
    PointsRequest,
)
from metric_solver_ros.msg import DepthInfo
from metric_solver_ros.parameters import (
    PARAMETERS,
    SPECS,
    RuntimeSettings,
    initial_settings,
    validate_changes,
)
from metric_solver_ros.srv import SetAnchor

NODE_NAME = 'metric_solver'
#: Camera infos kept for pairing with images by stamp.
CAMERA_INFO_HISTORY = 30
#: Longest wait of an image for the camera_info with its stamp (when the camera pairs them) [s].
CAMERA_INFO_WAIT_S = 0.05
#: Weight of each image in the running share of images whose late camera_info came in time.
CAMERA_INFO_SCORE_RATE = 0.25
#: Out-of-memory frames in a row before the engine gives up resolution (then the GPU).
OOM_STREAK = 2
#: Seconds between two log lines of the same kind of error.
ERROR_LOG_PERIOD_S = 5.0


_DIGITS = re.compile(r'[-+]?\d[\d.e+-]*')


def _stamp(header: Any) -> tuple[int, int]:
    """A header's stamp as ``(sec, nanosec)`` (ordered, exact: for pairing by stamp)."""
    return header.stamp.sec, header.stamp.nanosec


class StartupError(RuntimeError):
    """The node cannot start (bad checkpoint, device, parameters); the text says why."""


class ThrottledLog:
    """Log each kind of problem at most once per period, counting what was held back."""

    def __init__(self, logger: Any, period_s: float = ERROR_LOG_PERIOD_S) -> None:
        self._logger = logger
        self._period_s = period_s
        self._state: dict[str, list[float]] = {}  # key -> [last log time, suppressed count]
        self._lock = threading.Lock()

    def warn(self, key: str, text: str, level: str = 'warning') -> None:
        """Log ``text`` at ``level`` (warning or error) unless its kind was logged lately.

        The kind is ``key`` plus the text with its numbers blanked, so different problems
        (a short buffer, an unknown encoding) each get through, and a flood of one does not.
        """
        key = f'{key}:{_DIGITS.sub("#", text)}'
        now = time.monotonic()
        with self._lock:
            state = self._state.get(key)
            if state is not None and now - state[0] < self._period_s:
                state[1] += 1
                return
            suppressed = int(state[1]) if state else 0
            self._state[key] = [now, 0]
        if suppressed:
            text += f' ({suppressed} more like this in the last {self._period_s:g} s)'
        # One call site per severity: rclpy refuses a call site whose severity changes
        # ("Logger severity cannot be changed between calls").
        if level == 'error':
            self._logger.error(text)
        else:
            self._logger.warning(text)


class _Mailbox:
    """The worker's inbox: the latest image (newer replaces older) and a re-decode request."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._image: tuple[Any, float] | None = None
        self._redecode = False
        self.dropped = 0

    def put_image(self, msg: Any) -> None:
        with self._cond:
            if self._image is not None:
                self.dropped += 1
            self._image = (msg, time.monotonic())
            self._cond.notify()

    def request_redecode(self) -> None:
        with self._cond:
            self._redecode = True
            self._cond.notify()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def take(self, timeout_s: float) -> tuple[str, Any] | None:
        """Wait for work: ('image', msg), ('redecode', None) or None on timeout."""
        with self._cond:
            if self._image is None and not self._redecode:
                self._cond.wait(timeout_s)
            if self._image is not None:
                msg, _ = self._image
                self._image, self._redecode = None, False  # the new frame uses the new anchor
                return 'image', msg
            if self._redecode:
                self._redecode = False
                return 'redecode', None
            return None


def transport_warning(environ: Mapping[str, str] | None = None) -> str | None:
    """Why large best-effort images may not arrive with this process environment, or None.

    rmw_fastrtps answers localhost-only discovery (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``
    or ``ROS_LOCALHOST_ONLY=1``) by replacing the builtin transports with localhost UDP, which
    turns ``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA`` off without a word: best-effort images (any
    640x480 frame is larger than a datagram) are then almost all lost.
    """
    env = os.environ if environ is None else environ
    localhost = (env.get('ROS_AUTOMATIC_DISCOVERY_RANGE', '').upper() == 'LOCALHOST'
                 or env.get('ROS_LOCALHOST_ONLY', '') == '1')
    if localhost and env.get('FASTDDS_BUILTIN_TRANSPORTS', '').upper() == 'LARGE_DATA':
        return ('FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA has no effect with localhost-only '
                'discovery (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST / ROS_LOCALHOST_ONLY=1): '
                'large best-effort images will be lost. Isolate with ROS_DOMAIN_ID instead, '
                'or make the image subscription reliable (README, "Transport").')
    return None


def _descriptor(spec, pool_m: tuple[float, float]) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.choices:
        descriptor.additional_constraints = 'one of: ' + ', '.join(spec.choices)
    if spec.name in ('anchor', 'anchors'):
        # Numbers of any type (ints are common in YAML and on the command line) and an empty
        # list of any type are accepted here and validated by the node against the pool.
        descriptor.dynamic_typing = True
        descriptor.additional_constraints = f'anchor pool range [{pool_m[0]:g}, {pool_m[1]:g}] m'
    elif spec.float_range is not None:
        descriptor.floating_point_range = [FloatingPointRange(
            from_value=float(spec.float_range[0]), to_value=float(spec.float_range[1]))]
    elif spec.int_range is not None:
        descriptor.integer_range = [IntegerRange(
            from_value=spec.int_range[0], to_value=spec.int_range[1], step=spec.int_range[2])]
    return descriptor


class MetricSolverNode(Node):
    """Metric depth, anchor mask and point cloud from a camera stream.

    Raises:
        StartupError: If the model cannot be loaded or a parameter is invalid at start-up.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._log = ThrottledLog(self.get_logger())
        self._lock = threading.Lock()  # guards _settings and _anchors_in_effect
        fixed = self._declare_read_only()
        self.engine = self._load_engine(fixed)
        pool = (self.engine.pool_m[0], self.engine.pool_m[-1])
        for spec in PARAMETERS:
            if not spec.read_only:
                self._declare(spec, pool)
        startup = {spec.name: self.get_parameter(spec.name).value
                   for spec in PARAMETERS if not spec.read_only}
        try:
            self._settings = validate_changes(initial_settings(), startup,
                                              self.engine.validate_anchors)
        except ValueError as exc:
            raise StartupError(f'invalid parameter at start-up: {exc}') from exc
        self._selector = AnchorSelector(self.engine.pool_m, self._settings.anchor)
        self._apply_engine_settings(self._settings)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._camera_infos: collections.deque = collections.deque(maxlen=CAMERA_INFO_HISTORY)
        self._info_arrived = threading.Condition()
        # Recent share of images (newer than every info) whose own info came within the wait,
        # and the images that did not wait, as (stamp, deadline on the monotonic clock).
        self._info_score = 0.0
        self._info_pending: collections.deque = collections.deque(maxlen=CAMERA_INFO_HISTORY)
        self._last_header = None
        self._last_info: CameraInfo | None = None
        self._last_rgb: np.ndarray | None = None
        self._frames = 0
        self._oom_streak = 0
        self._told_distortion = False  # the lens-distortion note is logged once
        self._mailbox = _Mailbox()
        self._stop = threading.Event()

        # A fresh profile per endpoint: rclpy writes `qos_overrides.<topic>...` values into the
        # profile object it is given, so a shared one (let alone rclpy's global
        # qos_profile_sensor_data) would carry one topic's override to the others.
        def sensor_qos() -> QoSProfile:
            return copy.copy(qos_profile_sensor_data)

        def out_qos() -> QoSProfile:
            return QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)

        overrides = QoSOverridingOptions.with_default_policies()
        if fixed['image_transport'] == 'compressed':
            self.create_subscription(CompressedImage, 'image/compressed', self._on_image,
                                     sensor_qos(), qos_overriding_options=overrides)
        else:
            self.create_subscription(Image, 'image', self._on_image, sensor_qos(),
                                     qos_overriding_options=overrides)
        self.create_subscription(CameraInfo, 'camera_info', self._on_camera_info, sensor_qos(),
                                 qos_overriding_options=overrides)
        self.create_subscription(Float32, 'anchor', self._on_anchor_topic, 10)
        self._pub_depth = self.create_publisher(Image, 'depth', out_qos(),
                                                qos_overriding_options=overrides)
        self._pub_depth_info_cam = self.create_publisher(CameraInfo, 'depth/camera_info',
                                                         out_qos(),
                                                         qos_overriding_options=overrides)
        self._pub_mask = self.create_publisher(Image, 'anchor_mask', out_qos(),
                                               qos_overriding_options=overrides)
        self._pub_points = self.create_publisher(PointCloud2, 'points', out_qos(),
                                                 qos_overriding_options=overrides)
        self._pub_info = self.create_publisher(DepthInfo, 'depth_info', 10)
        self.create_service(SetAnchor, 'set_anchor', self._on_set_anchor)

        self._worker = threading.Thread(target=self._work, name='metric_solver_worker',
                                        daemon=True)
        self._worker.start()
        warning = transport_warning()
        if warning:
            self.get_logger().warning(warning)
        if fixed['cuda_graphs'] and not self.engine.cuda_graphs:
            self.get_logger().warning(f'cuda_graphs: true has no effect on {self.engine.device}')
        config = self.engine.config
        graphs = ' with CUDA graphs' if self.engine.cuda_graphs else ''
        self.get_logger().info(
            f'ready: model {self._model_name} (preset {config.preset}), device '
            f'{self.engine.device}{graphs}, precision '
            f'{str(self.engine.dtype).replace("torch.", "")}, '
            f'input short side {self.engine.input_size} px ({self.engine.resize_mode}), anchor '
            f'pool {", ".join(f"{a:g}" for a in self.engine.pool_m)} m, anchors in effect '
            f'{self._describe_anchors()}, outputs: depth 32FC1 [m] (NaN undefined, +inf beyond '
            f'the far limit), anchor_mask mono8, points [m], image transport '
            f'{fixed["image_transport"]}')

    # ------------------------------------------------------------------------ start-up

    def _declare(self, spec, pool_m: tuple[float, float]) -> Any:
        """Declare one parameter; a mistyped override becomes a StartupError."""
        try:
            return self.declare_parameter(spec.name, spec.default,
                                          _descriptor(spec, pool_m)).value
        except Exception as exc:  # rclpy's type/range exceptions differ between distros
            raise StartupError(f'parameter {spec.name}: {exc}') from exc

    def _declare_read_only(self) -> dict[str, Any]:
        values = {}
        for spec in PARAMETERS:
            if spec.read_only:
                value = self._declare(spec, (0.0, 0.0))
                if spec.choices and value not in spec.choices:
                    raise StartupError(f'parameter {spec.name} must be one of '
                                       f'{", ".join(spec.choices)}, got {value!r}')
                values[spec.name] = value
        return values

    def _load_engine(self, fixed: dict[str, Any]) -> DepthEngine:
        from metric_solver_ros.checkpoint import CheckpointError, default_model_path

        path = fixed['checkpoint'] or str(default_model_path())
        self._model_name = path if fixed['checkpoint'] else f'bundled default ({path})'
        try:
            return DepthEngine.from_checkpoint(
                path, device=fixed['device'], precision=fixed['precision'],
                input_size=fixed['input_size'] or None, resize_mode=fixed['resize_mode'],
                compile=fixed['compile'], cuda_graphs=fixed['cuda_graphs'])
        except (CheckpointError, EngineError, FileNotFoundError) as exc:
            raise StartupError(f'cannot start: {exc}') from exc

    # ------------------------------------------------------------------------ parameters

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """The one validation path for every runtime change (parameter, topic, service)."""
        # Others (qos_overrides.*, use_sim_time) are rclpy's own and pass through.
        changes = {p.name: p.value for p in params if p.name in SPECS}
        if not changes:
            return SetParametersResult(successful=True)
        with self._lock:
            try:
                new = validate_changes(self._settings, changes, self.engine.validate_anchors)
            except ValueError as exc:
                self._log.warn(f'param:{",".join(changes)}', f'refused: {exc}')
                return SetParametersResult(successful=False, reason=str(exc))
            old, self._settings = self._settings, new
            anchors_changed = (new.fixed_anchors != old.fixed_anchors
                               or new.anchor_mode != old.anchor_mode)
            if anchors_changed:
                self._selector.reset(new.anchor)
        self._apply_engine_settings(new)
        if anchors_changed:  # at most once a second: a planner may set it at control rate
            self.get_logger().info(f'anchors now {self._describe_anchors()}',
                                   throttle_duration_sec=1.0)
            if new.redecode_on_anchor_change and self.engine.has_frame:
                self._mailbox.request_redecode()
        return SetParametersResult(successful=True)

    def _apply_engine_settings(self, settings: RuntimeSettings) -> None:
        self.engine.flip_tta = settings.flip_tta
        self.engine.far_limit_m = settings.far_limit or None

    def _request_anchor(self, anchor_m: float) -> SetParametersResult:
        """Set one anchor through the parameter path (clears a fusion list)."""
        params = [Parameter('anchor', Parameter.Type.DOUBLE, float(anchor_m))]
        if self._settings.anchors:
            params.append(Parameter('anchors', Parameter.Type.DOUBLE_ARRAY, []))
        return self.set_parameters_atomically(params)

    def _on_anchor_topic(self, msg: Float32) -> None:
        result = self._request_anchor(float(msg.data))
        if not result.successful:
            self._log.warn('anchor_topic', f'anchor topic: {result.reason}')

    def _on_set_anchor(self, request: SetAnchor.Request,
                       response: SetAnchor.Response) -> SetAnchor.Response:
        result = self._request_anchor(float(request.anchor))
        response.success = bool(result.successful)
        response.message = '' if result.successful else result.reason
        with self._lock:
            response.anchor = float(self._current_anchors()[-1])
        return response

    def _current_anchors(self) -> tuple[float, ...]:
        if self._settings.anchor_mode == 'fixed':
            return self._settings.fixed_anchors
        return (self._selector.current_m,)

    def _describe_anchors(self) -> str:
        anchors = ', '.join(f'{a:g}' for a in self._current_anchors())
        return f'[{anchors}] m ({self._settings.anchor_mode})'

    # ------------------------------------------------------------------------ callbacks

    def _on_image(self, msg: Any) -> None:
        self._mailbox.put_image(msg)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        with self._info_arrived:
            self._camera_infos.append(msg)
            stamp = _stamp(msg.header)
            for pending in self._info_pending:  # after its image: would a wait have caught it?
                if pending[0] == stamp:
                    self._info_pending.remove(pending)
                    self._score_info_wait(time.monotonic() <= pending[1])
                    break
            self._info_arrived.notify_all()

    def _score_info_wait(self, caught: bool) -> None:
        """Update the running share of images whose own info came within the wait."""
        self._info_score += CAMERA_INFO_SCORE_RATE * (float(caught) - self._info_score)

    def _camera_info_for(self, header: Any, width: int, height: int) -> CameraInfo | None:
        """The camera info with the image's stamp, else the latest; None if none is usable.

        image_transport's CameraPublisher sends the image first, then its info: an image newer
        than every info may wait up to ``CAMERA_INFO_WAIT_S`` for its own, else a zoom or
        resolution change would go out one frame late, with the wrong intrinsics under this
        image's stamp. It waits only while most such images recently got their own info within
        that time (a running share, ``_info_score`` >= 0.5, learned from the stream, also from
        images that did not wait): a camera whose info comes later, or for some frames only,
        costs no waiting.
        """
        stamp = _stamp(header)

        def own() -> CameraInfo | None:
            return next((i for i in reversed(self._camera_infos) if _stamp(i.header) == stamp),
                        None)

        with self._info_arrived:
            now = time.monotonic()
            while self._info_pending and self._info_pending[0][1] < now:  # no info in time
                self._info_pending.popleft()
                self._score_info_wait(False)
            info = own()
            if (info is None and self._camera_infos
                    and _stamp(self._camera_infos[-1].header) < stamp):  # info may follow
                if self._info_score >= 0.5:
                    caught = self._info_arrived.wait_for(lambda: own() is not None,
                                                         CAMERA_INFO_WAIT_S)
                    self._score_info_wait(caught)
                    info = own()
                else:  # no wait: learn whether one would have caught it
                    self._info_pending.append((stamp, now + CAMERA_INFO_WAIT_S))
            infos = list(self._camera_infos)
        if not infos:
            self._log.warn('no_camera_info', 'no camera_info received yet: publishing depth, '
                           'not depth/camera_info or points', level='warning')
            return None
        info = info or infos[-1]
        try:
            camera_info_to_intrinsics(info)
        except MessageError as exc:
            self._log.warn('bad_camera_info', f'ignoring camera_info: {exc}')
            return None
        described = camera_info_image_size(info)  # binning / roi reduce the sensor's size
        if described != (width, height) and any(described):
            self._log.warn('camera_info_size', f'ignoring camera_info for a {described[0]}x'
                           f'{described[1]} image: the image is {width}x{height}')
            return None
        return info

    # ------------------------------------------------------------------------ worker

    def _work(self) -> None:
        while not self._stop.is_set():
            job = self._mailbox.take(timeout_s=0.2)
            if job is None or self._stop.is_set():
                continue
            try:
                if job[0] == 'image':
                    self._process_image(job[1])
                else:
                    self._process_redecode()
            except Exception as exc:  # the node must keep serving whatever happens
                if self._stop.is_set() or not rclpy.ok():
                    return  # shutting down: publishers are gone
                try:
                    self._log.warn(f'worker:{type(exc).__name__}',
                                   f'frame dropped: {type(exc).__name__}: {exc}', level='error')
                except Exception as log_exc:  # not even logging may end the worker
                    print(f'metric_solver_ros: frame dropped: {type(exc).__name__}: {exc} '
                          f'(logging failed: {log_exc})', file=sys.stderr, flush=True)

    def _points_request(self, settings: RuntimeSettings,
                        info: CameraInfo | None) -> PointsRequest | None:
        if (info is None or not settings.publish_points
                or self._pub_points.get_subscription_count() == 0):
            return None
        if not self._told_distortion and any(float(v) != 0.0 for v in info.d):
            self._told_distortion = True
            self.get_logger().warning(
                f'camera_info has lens distortion ({info.distortion_model}, d != 0): `points` '
                f'back-projects with the pinhole k and does not undistort, so points towards '
                f'the image edges are off unless the image is rectified (image_rect)')
        return PointsRequest(intrinsics=camera_info_to_intrinsics(info),
                             stride=settings.points_stride,
                             max_range_m=settings.points_max_range or math.inf, with_rgb=True)

    def _process_image(self, msg: Any) -> None:
        try:
            rgb = compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else image_to_rgb(msg)
        except MessageError as exc:
            self._log.warn('bad_image', f'dropped image: {exc}')
            return
        height, width = rgb.shape[:2]
        info = self._camera_info_for(msg.header, width, height)
        with self._lock:
            settings = self._settings
            anchors = self._current_anchors()
        points = self._points_request(settings, info)
        result = self._run_engine(lambda: self.engine.infer(rgb, anchors, points=points),
                                  'dropped image')
        if result is None:
            return
        self._oom_streak = 0
        self._last_header, self._last_info, self._last_rgb = msg.header, info, rgb
        self._publish(result, msg.header, info, settings)
        if settings.anchor_mode != 'fixed':
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
                self.get_logger().info(f'{settings.anchor_mode} anchor: {before:g} m -> '
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
            self.get_logger().warning(f'after {OOM_STREAK} out-of-memory frames in a row: '
                                      f'{change}')

    def _process_redecode(self) -> None:
        if self._last_header is None:
            return
        with self._lock:
            settings = self._settings
            anchors = self._current_anchors()
        points = self._points_request(settings, self._last_info)
        def redecode() -> DepthResult:
            if self.engine.has_frame:
                return self.engine.redecode(anchors, points=points)
            # a setting change (flip_tta) dropped the cached features: encode again
            return self.engine.infer(self._last_rgb, anchors, points=points)

        result = self._run_engine(redecode, 're-decode dropped')
        if result is not None:
            self._publish(result, self._last_header, self._last_info, settings)

    def _run_engine(self, call: Callable[[], DepthResult], what: str) -> DepthResult | None:
        """``call()``; None when the engine refused (logged as ``what``) or ran out of memory."""
        try:
            return call()
        except EngineOutOfMemory as exc:
            self._on_out_of_memory(exc)
        except EngineError as exc:
            self._log.warn('engine', f'{what}: {exc}')
        return None

    # ------------------------------------------------------------------------ publishing

    def _publish(self, result: DepthResult, header: Any, info: CameraInfo | None,
                 settings: RuntimeSettings) -> None:
        if self._stop.is_set():
            return
        depth = result.depth_m
        if self._pub_depth.get_subscription_count():
            self._pub_depth.publish(_image_msg(header, depth, '32FC1'))
        if info is not None and self._pub_depth_info_cam.get_subscription_count():
            out = CameraInfo()
            for field in ('height', 'width', 'distortion_model', 'd', 'k', 'r', 'p',
                          'binning_x', 'binning_y', 'roi'):
                setattr(out, field, getattr(info, field))
            if not (out.width or out.height or out.binning_x > 1 or out.binning_y > 1):
                out.height, out.width = depth.shape  # else the sensor's size, as it was said
            out.header = header
            self._pub_depth_info_cam.publish(out)
        if self._pub_mask.get_subscription_count():
            mask = result.near.astype(np.uint8) * np.uint8(255)
            self._pub_mask.publish(_image_msg(header, mask, 'mono8'))
        if result.points_m is not None:
            self._pub_points.publish(_cloud_msg(header, result.points_m, result.points_rgb))
        self._pub_info.publish(self._depth_info(result, header, settings))
        self._frames += 1

    def _depth_info(self, result: DepthResult, header: Any,
                    settings: RuntimeSettings) -> DepthInfo:
        depth = result.depth_m
        msg = DepthInfo(header=header)
        msg.anchor = float(max(result.anchors_m))
        msg.anchors = array.array('f', result.anchors_m)
        (msg.near_fraction, msg.far_fraction, msg.min_depth, msg.median_depth,
         msg.max_depth) = depth_statistics(depth, result.near)
        timings = result.timings_ms
        msg.inference_ms = float(timings.get('total', 0.0))
        stamp_ns = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
        now_ns = self.get_clock().now().nanoseconds
        # NaN without a stamp, or under use_sim_time before the first /clock (now = 0)
        msg.latency_ms = float((now_ns - stamp_ns) / 1e6) if stamp_ns and now_ns else math.nan
        msg.anchor_mode = settings.anchor_mode
        msg.height, msg.width = depth.shape
        msg.frames_skipped = self._mailbox.dropped
        return msg

    # ------------------------------------------------------------------------ shutdown

    def destroy_node(self) -> None:
        """Unsubscribe, stop the worker (finishing at most the frame in flight), destroy the node.

        Unsubscribing first lets the peers' writers stop sending while the worker finishes, so
        that fewer messages are mid-transfer when the participant closes (README, "Transport").
        """
        for subscription in list(self.subscriptions):
            self.destroy_subscription(subscription)
        if hasattr(self, '_worker'):  # absent when start-up failed
            self._stop.set()
            self._mailbox.wake()
            if self._worker.is_alive():
                self._worker.join(timeout=1.5)
        super().destroy_node()


def depth_statistics(depth_m: np.ndarray, near: np.ndarray
                     ) -> tuple[float, float, float, float, float]:
    """DepthInfo's statistics of one depth image.

    Args:
        depth_m: Depth [m], HxW (NaN undefined, +inf beyond the far limit).
        near: Near mask, bool HxW.

    Returns:
        ``(near_fraction, far_fraction, min_m, median_m, max_m)``: fractions of the defined
        (non-NaN) pixels that are near / +inf; min, median and max of the finite depths [m]
        (NaN when there are none).
    """
    defined = ~np.isnan(depth_m)
    finite = depth_m[np.isfinite(depth_m)]
    n_defined = max(int(defined.sum()), 1)
    near_fraction = float((near & defined).sum()) / n_defined
    far_fraction = float(np.isposinf(depth_m).sum()) / n_defined
    if not finite.size:
        return near_fraction, far_fraction, math.nan, math.nan, math.nan
    return (near_fraction, far_fraction, float(finite.min()), float(np.median(finite)),
            float(finite.max()))


def _as_uint8_array(values: np.ndarray) -> array.array:
    """A ``uint8[]`` field value without per-byte Python work."""
    out = array.array('B')
    out.frombytes(memoryview(np.ascontiguousarray(values)).cast('B'))
    return out


def _image_msg(header: Any, values: np.ndarray, encoding: str) -> Image:
    msg = Image(header=header, height=values.shape[0], width=values.shape[1],
                encoding=encoding, is_bigendian=0)
    msg.step = values.shape[1] * values.dtype.itemsize
    msg.data = _as_uint8_array(values)
    return msg


def _cloud_msg(header: Any, xyz_m: np.ndarray, rgb: np.ndarray | None) -> PointCloud2:
    points = pack_cloud(xyz_m, rgb)
    msg = PointCloud2(header=header, height=points.shape[0], width=points.shape[1],
                      is_bigendian=False, is_dense=False)
    msg.fields = [PointField(name=name, offset=points.dtype.fields[name][1],
                             datatype=POINTFIELD_FLOAT32, count=1)
                  for name in points.dtype.names]
    msg.point_step = points.dtype.itemsize
    msg.row_step = msg.point_step * msg.width
    msg.data = _as_uint8_array(points)
    return msg


SHUTDOWN_DEADLINE_S = 1.8
"""After SIGINT/SIGTERM the process is gone within this long [s], whatever blocks."""


class ExitWatchdog:
    """Ends the process if it has not exited ``deadline_s`` after SIGINT or SIGTERM.

    The Fast DDS of the PyPI wheels (3.2) can block forever while deleting a participant whose
    ``LARGE_DATA`` channel is mid-read (README, "Transport"); a node that then ignores SIGTERM
    stalls a launch file or a robot's shutdown. The watchdog does not rely on the main thread:
    Python's C-level signal handler writes each signal's number to a socket
    (``signal.set_wakeup_fd``) even while the main thread is blocked in C, and a daemon thread
    waiting on that socket starts the clock. If :meth:`done` has not been called by the
    deadline it logs why, dumps every thread's Python stack to stderr (``faulthandler``; what
    was stuck), and ends the process with ``os._exit(exit_code)``: the node's outputs stopped
    with the signal, only the DDS teardown is skipped.

    Create it in the main thread after the signal handlers are installed.

    Args:
        deadline_s: Seconds from the first SIGINT/SIGTERM to the forced exit.
        exit_code: Exit status of a forced exit.
    """

    MESSAGE = 'shutdown did not finish'

    def __init__(self, deadline_s: float = SHUTDOWN_DEADLINE_S, exit_code: int = 0) -> None:
        import socket

        self.deadline_s = deadline_s
        self.exit_code = exit_code
        self._finished = threading.Event()
        self._read, self._write = socket.socketpair()
        self._write.setblocking(False)
        signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        threading.Thread(target=self._watch, name='exit_watchdog', daemon=True).start()

    def done(self) -> None:
        """The teardown finished: no forced exit."""
        self._finished.set()
        signal.set_wakeup_fd(-1)

    def _watch(self) -> None:
        import faulthandler

        while True:
            data = self._read.recv(64)
            if not data or {signal.SIGINT, signal.SIGTERM} & set(data):
                break
        if self._finished.wait(self.deadline_s):
            return
        print(f'[{NODE_NAME}] {self.MESSAGE} within {self.deadline_s:g} s of the signal; '
              'every thread\'s stack follows, then the process exits without the rest of the '
              'DDS teardown', file=sys.stderr, flush=True)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(self.exit_code)


def _release_context() -> None:
    """Delete the default context's DDS participant now (and with it Fast DDS's /dev/shm files).

    Otherwise that happens in the interpreter's teardown, which :func:`main` skips.
    """
    context = rclpy.utilities.get_default_context()
    destroy = getattr(context, 'destroy', None)  # Iron and later
    if destroy is not None:
        destroy()
        return
    handle = getattr(context, 'handle', None)  # Humble: the rcl context's pybind handle
    if handle is not None and hasattr(handle, 'destroy_when_not_in_use'):
        handle.destroy_when_not_in_use()


def main(args: list[str] | None = None) -> NoReturn:
    """Run the node until Ctrl-C / SIGTERM (Humble-safe init/shutdown), then end the process.

    The executor is spun in short slices so that a Python SIGTERM handler runs promptly on every
    distro; SIGINT is rclpy's own (it shuts the context down). After the node, the ROS context
    and its DDS participant are torn down (under :class:`ExitWatchdog`: whatever blocks, the
    process is gone within ``SHUTDOWN_DEADLINE_S`` of either signal), the process ends with
    ``os._exit``, skipping the interpreter's own teardown: ~0.5 s (mostly torch), and fatal
    when a frame is still being computed (a slow model on the CPU): finalisation ends the
    worker thread inside torch and C++ aborts ("terminate called without an active
    exception", measured). Everything the node owns has been released by then.
    """
    rclpy.init(args=args)
    terminate = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: terminate.set())
    watchdog = ExitWatchdog()
    node = None
    code = 0
    try:
        node = MetricSolverNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok() and not terminate.is_set():
            executor.spin_once(timeout_sec=0.1)
    except StartupError as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(str(exc))
        code = 1
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # ExternalShutdownException after SIGINT (name differs by distro)
        if type(exc).__name__ != 'ExternalShutdownException':
            raise
    finally:
        # Teardown is not interruptible: a second Ctrl-C (or launch's SIGINT after systemd's
        # SIGTERM) raised KeyboardInterrupt in the worker join, skipped the rest, and the
        # interpreter's own teardown then aborted inside torch (exit -6). ExitWatchdog still
        # bounds the time.
        # A no-op handler, not SIG_IGN: an ignored signal never reaches the wakeup fd that
        # starts ExitWatchdog (a teardown without a signal, e.g. after a StartupError, could
        # then hang in DDS with only SIGKILL left).
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: None)
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        _release_context()
        watchdog.done()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == '__main__':
    main()
