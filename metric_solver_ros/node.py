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

The node only wires: messages are built in :mod:`~metric_solver_ros.messages`, images are paired
with their camera_info by :class:`~metric_solver_ros.camera_info_pairing.CameraInfoPairing`, the
worker's inbox is :class:`~metric_solver_ros.mailbox.Mailbox`, parameters are declared by
:mod:`~metric_solver_ros.node_parameters`, and the process's start and end are
:mod:`~metric_solver_ros.process_life`.
"""

from __future__ import annotations

import copy
import math
import sys
import threading
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np
import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Float32

from metric_solver_ros import messages
from metric_solver_ros.anchor_modes import AnchorSelector, RoiOutsideImage
from metric_solver_ros.camera_info_pairing import CameraInfoPairing, PairedInfo
from metric_solver_ros.conversions import MessageError, compressed_to_rgb, image_to_rgb
from metric_solver_ros.engine import (
    DepthEngine,
    DepthResult,
    EngineError,
    EngineOutOfMemory,
    PointsRequest,
)
from metric_solver_ros.mailbox import Mailbox
from metric_solver_ros.msg import DepthInfo
from metric_solver_ros.node_parameters import declare_dynamic, declare_read_only
from metric_solver_ros.parameters import SPECS, RuntimeSettings, validate_changes
from metric_solver_ros.process_life import (
    ExitWatchdog,
    StartupError,
    ThrottledLog,
    end_process,
    mute_signals,
    release_context,
    terminate_event,
    transport_warning,
)
from metric_solver_ros.srv import SetAnchor

NODE_NAME = 'metric_solver'
#: Out-of-memory frames in a row before the engine gives up resolution (then the GPU).
OOM_STREAK = 2


class MetricSolverNode(Node):
    """Metric depth, anchor mask and point cloud from a camera stream.

    Raises:
        StartupError: If the model cannot be loaded or a parameter is invalid at start-up.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._log = ThrottledLog(self.get_logger())
        self._lock = threading.Lock()  # guards _settings and _selector
        fixed = declare_read_only(self)
        self.engine = self._load_engine(fixed)
        self._settings = declare_dynamic(self, self.engine.pool_m, self.engine.validate_anchors)
        self._selector = AnchorSelector(self.engine.pool_m, self._settings.anchor)
        self._apply_engine_settings(self._settings)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._pairing = CameraInfoPairing(self._log)
        # The last frame processed (re-decoded when the anchor changes): header, camera info, rgb.
        self._last_header = None
        self._last_info: PairedInfo | None = None
        self._last_rgb: np.ndarray | None = None
        self._oom_streak = 0
        self._told_distortion = False  # the lens-distortion note is logged once
        self._mailbox = Mailbox()
        self._stop = threading.Event()
        self._create_endpoints(fixed['image_transport'])
        self._worker = threading.Thread(target=self._work, name='metric_solver_worker',
                                        daemon=True)
        self._worker.start()
        warning = transport_warning()
        if warning:
            self.get_logger().warning(warning)
        if fixed['cuda_graphs'] and not self.engine.cuda_graphs:
            self.get_logger().warning(f'cuda_graphs: true has no effect on {self.engine.device}')
        self._log_ready(fixed['image_transport'])

    # ------------------------------------------------------------------------ start-up

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

    def _create_endpoints(self, image_transport: str) -> None:
        """Subscriptions, publishers and the service (relative names, QoS overridable)."""
        overrides = QoSOverridingOptions.with_default_policies()

        # A fresh profile per endpoint: rclpy writes `qos_overrides.<topic>...` values into the
        # profile object it is given, so a shared one (let alone rclpy's global
        # qos_profile_sensor_data) would carry one topic's override to the others.
        def subscribe(kind: type, topic: str, callback: Callable[[Any], None]) -> None:
            self.create_subscription(kind, topic, callback, copy.copy(qos_profile_sensor_data),
                                     qos_overriding_options=overrides)

        def publisher(kind: type, topic: str) -> Any:
            return self.create_publisher(
                kind, topic, QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE),
                qos_overriding_options=overrides)

        if image_transport == 'compressed':
            subscribe(CompressedImage, 'image/compressed', self._on_image)
        else:
            subscribe(Image, 'image', self._on_image)
        subscribe(CameraInfo, 'camera_info', self._pairing.add)
        self.create_subscription(Float32, 'anchor', self._on_anchor_topic, 10)
        self._pub_depth = publisher(Image, 'depth')
        self._pub_depth_info_cam = publisher(CameraInfo, 'depth/camera_info')
        self._pub_mask = publisher(Image, 'anchor_mask')
        self._pub_points = publisher(PointCloud2, 'points')
        self._pub_info = self.create_publisher(DepthInfo, 'depth_info', 10)
        self.create_service(SetAnchor, 'set_anchor', self._on_set_anchor)

    def _log_ready(self, image_transport: str) -> None:
        engine = self.engine
        graphs = ' with CUDA graphs' if engine.cuda_graphs else ''
        self.get_logger().info(
            f'ready: model {self._model_name} (preset {engine.config.preset}), device '
            f'{engine.device}{graphs}, precision '
            f'{str(engine.dtype).replace("torch.", "")}, '
            f'input short side {engine.input_size} px ({engine.resize_mode}), anchor '
            f'pool {", ".join(f"{a:g}" for a in engine.pool_m)} m, anchors in effect '
            f'{self._describe_anchors()}, outputs: depth 32FC1 [m] (NaN undefined, +inf beyond '
            f'the far limit), anchor_mask mono8, points [m], image transport '
            f'{image_transport}')

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

    # ------------------------------------------------------------------------ worker

    def _on_image(self, msg: Any) -> None:
        self._mailbox.put_image(msg)

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
                        paired: PairedInfo | None) -> PointsRequest | None:
        if (paired is None or not settings.publish_points
                or self._pub_points.get_subscription_count() == 0):
            return None
        info = paired.info
        if not self._told_distortion and any(float(v) != 0.0 for v in info.d):
            self._told_distortion = True
            self.get_logger().warning(
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
        result = self._run_engine(lambda: self.engine.infer(rgb, anchors, points=points),
                                  'dropped image')
        if result is None:
            return
        self._oom_streak = 0
        self._last_header, self._last_info, self._last_rgb = msg.header, paired, rgb
        self._publish(result, msg.header, paired, settings)
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

    def _publish(self, result: DepthResult, header: Any, paired: PairedInfo | None,
                 settings: RuntimeSettings) -> None:
        """Publish the outputs somebody subscribes to (``depth_info`` always)."""
        if self._stop.is_set():
            return
        depth = result.depth_m
        if self._pub_depth.get_subscription_count():
            self._pub_depth.publish(messages.depth_msg(header, depth))
        if paired is not None and self._pub_depth_info_cam.get_subscription_count():
            self._pub_depth_info_cam.publish(
                messages.depth_camera_info_msg(paired.info, header, depth.shape))
        if self._pub_mask.get_subscription_count():
            self._pub_mask.publish(messages.mask_msg(header, result.near))
        if result.points_m is not None:
            self._pub_points.publish(messages.cloud_msg(header, result.points_m,
                                                        result.points_rgb))
        self._pub_info.publish(messages.depth_info_msg(
            result, header, settings.anchor_mode, lambda: self.get_clock().now().nanoseconds,
            self._mailbox.dropped))

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


def main(args: list[str] | None = None) -> NoReturn:
    """Run the node until Ctrl-C / SIGTERM (Humble-safe init/shutdown), then end the process.

    The executor is spun in short slices so that a Python SIGTERM handler runs promptly on every
    distro; SIGINT is rclpy's own (it shuts the context down). After the node, the ROS context
    and its DDS participant are torn down (under :class:`ExitWatchdog`: whatever blocks, the
    process is gone within ``SHUTDOWN_DEADLINE_S`` of either signal), then the process ends
    without the interpreter's own teardown (:func:`~metric_solver_ros.process_life.end_process`).
    """
    rclpy.init(args=args)
    terminate = terminate_event()
    watchdog = ExitWatchdog(name=NODE_NAME)
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
        mute_signals()  # the teardown is not interruptible; ExitWatchdog bounds its time
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        release_context()
        watchdog.done()
    end_process(code)


if __name__ == '__main__':
    main()
