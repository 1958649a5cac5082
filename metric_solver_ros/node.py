"""The ``metric_solver`` ROS 2 node (executable ``depth_node``): a thin adapter over the engine.

Topics, parameters and services are :class:`~metric_solver_ros.node_core.DepthNodeCore`'s,
shared with the lifecycle node (``lifecycle_node.py``, executable ``depth_lifecycle_node``).
This node loads the model and publishes from its start. The node only wires: messages are
built in :mod:`~metric_solver_ros.messages`, images are paired with their camera_info by
:class:`~metric_solver_ros.camera_info_pairing.CameraInfoPairing`, the worker's inbox is
:class:`~metric_solver_ros.mailbox.Mailbox`, parameters are declared by
:mod:`~metric_solver_ros.node_parameters`, health goes to /diagnostics through
:mod:`~metric_solver_ros.diagnostics`, and the process's start and end are
:mod:`~metric_solver_ros.process_life` and :func:`run` here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NoReturn

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from metric_solver_ros.node_core import DepthNodeCore
from metric_solver_ros.process_life import (
    ExitWatchdog,
    StartupError,
    end_process,
    mute_signals,
    release_context,
    terminate_event,
)

NODE_NAME = 'metric_solver'
#: After the lifecycle's shutdown transition: the executor keeps serving this long [s], so that
#: the change_state response reaches its caller before the participant goes.
FINISH_GRACE_S = 0.3


class MetricSolverNode(Node):
    """Metric depth, anchor mask and point cloud from a camera stream, from the start.

    Raises:
        StartupError: If the model cannot be loaded or a parameter is invalid at start-up.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.core = DepthNodeCore(self)
        self.core.configure()
        self.core.activate()

    def destroy_node(self) -> None:
        """Unsubscribe, stop the worker (finishing at most the frame in flight), destroy."""
        if hasattr(self, 'core'):  # absent when start-up failed
            self.core.stop()
        super().destroy_node()


def run(create: Callable[[], Any], args: list[str] | None = None) -> NoReturn:
    """Run the node ``create()`` makes until Ctrl-C / SIGTERM (Humble-safe init/shutdown).

    The executor is spun in short slices so that a Python SIGTERM handler runs promptly on every
    distro; SIGINT is rclpy's own (it shuts the context down). A lifecycle node also ends after
    its shutdown transition (``node.core.finished``). After the node, the ROS context and its
    DDS participant are torn down (under :class:`ExitWatchdog`: whatever blocks, the process is
    gone within ``SHUTDOWN_DEADLINE_S`` of either signal), then the process ends without the
    interpreter's own teardown (:func:`~metric_solver_ros.process_life.end_process`).

    Args:
        create: Makes the node (it may raise :class:`StartupError`: exit status 1).
        args: Command-line arguments for rclpy (None: the process's).
    """
    rclpy.init(args=args)
    terminate = terminate_event()
    watchdog = ExitWatchdog(name=NODE_NAME)
    node = None
    code = 0
    try:
        node = create()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok() and not terminate.is_set() and not node.core.finished.is_set():
            executor.spin_once(timeout_sec=0.1)
        if node.core.finished.is_set():
            deadline = time.monotonic() + FINISH_GRACE_S
            while rclpy.ok() and not terminate.is_set() and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
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


def main(args: list[str] | None = None) -> NoReturn:
    """Entry point of ``depth_node``."""
    run(MetricSolverNode, args)


if __name__ == '__main__':
    main()
